"""JitterBuffer: scripted arrivals against a simulated 20 ms playout clock (no real time)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest

from media.audio import JITTER_MAX_MS, JITTER_MIN_MS, JitterBuffer, OpusPacket, PlayoutFrame

FRAME_S = 0.020
TICK_PHASE_S = 0.011  # ticks fall between nominal arrivals, as they would in life
SEQ0 = 1000
TS0 = 480_000


def packet(
    index: int,
    arrival: float | None = None,
    *,
    seq0: int = SEQ0,
    ts0: int = TS0,
    ts_index: int | None = None,
) -> OpusPacket:
    """Packet number `index` of a 20 ms stream; payload names the index for checking."""
    ts_index = index if ts_index is None else ts_index
    return OpusPacket(
        payload=b"#%d" % index,
        timestamp=(ts0 + ts_index * 960) % 2**32,
        sequence=(seq0 + index) % 2**16,
        arrival=index * FRAME_S + 0.005 if arrival is None else arrival,
    )


def label(frame: PlayoutFrame | None) -> str | None:
    """'#3' for packet 3, 'fec#4' for FEC carried by packet 4, 'plc', or None."""
    if frame is None:
        return None
    name = frame.payload.decode() if frame.payload is not None else ""
    return name if frame.kind == "packet" else frame.kind + name


class Clock:
    """Delivers packets in arrival order and pops once per tick, like the real consumer."""

    def __init__(self, jb: JitterBuffer) -> None:
        self.jb = jb
        self.tick = 0
        self.played_at: dict[bytes, float] = {}
        self.pending: list[OpusPacket] = []

    def send(self, packets: Iterable[OpusPacket]) -> None:
        self.pending.extend(packets)
        self.pending.sort(key=lambda p: p.arrival)

    def run_until(self, end_s: float) -> list[str | None]:
        out = []
        while (now := self.tick * FRAME_S + TICK_PHASE_S) < end_s:
            while self.pending and self.pending[0].arrival <= now:
                self.jb.push(self.pending.pop(0))
            frame = self.jb.pop(now)
            if frame is not None and frame.kind == "packet":
                assert frame.payload is not None
                self.played_at[frame.payload] = now
            out.append(label(frame))
            self.tick += 1
        return out


def pop_all(jb: JitterBuffer, count: int, now: float = 1.0) -> list[str | None]:
    return [label(jb.pop(now + i * FRAME_S)) for i in range(count)]


def test_steady_stream_plays_every_packet_in_order_then_goes_idle() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    clock.send(packet(i) for i in range(50))
    out = clock.run_until(1.2)
    played = [x for x in out if x is not None]
    assert played == [f"#{i}" for i in range(50)] + ["plc"] * 3
    # Prebuffer of the 40 ms starting target: one silent tick, then straight playout.
    assert out[0] is None and out[1] == "#0"
    assert out[-1] is None
    assert jb.stats.received == 50
    assert jb.stats.underruns == 1  # the speaker stopping
    assert (jb.stats.late_dropped, jb.stats.fec_recovered, jb.stats.duplicates) == (0, 0, 0)


def test_single_packet_plays_after_target_delay_even_without_a_second() -> None:
    jb = JitterBuffer()
    jb.push(packet(0, arrival=0.0))
    assert jb.pop(0.010) is None
    frame = jb.pop(0.041)
    assert frame == PlayoutFrame("packet", b"#0")


def test_scrambled_packets_come_out_in_order() -> None:
    jb = JitterBuffer()
    order = [3, 0, 2, 1, 5, 4, 9, 6, 8, 7]
    for i in order:
        jb.push(packet(i, arrival=0.0))
    assert pop_all(jb, 10) == [f"#{i}" for i in range(10)]
    assert jb.stats.late_dropped == 0


def test_packet_overtaken_in_flight_still_plays_in_order() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    # Packet 5 arrives after 6, but before its playout point (40 ms of buffer).
    clock.send(packet(i, None if i != 5 else 5 * FRAME_S + 0.0245) for i in range(12))
    played = [x for x in clock.run_until(0.3) if x is not None]
    assert played[:12] == [f"#{i}" for i in range(12)]
    assert jb.stats.late_dropped == 0


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer()
    for i in [0, 1, 1, 2, 2, 2, 3]:
        jb.push(packet(i, arrival=0.0))
    assert pop_all(jb, 4) == ["#0", "#1", "#2", "#3"]
    assert jb.stats.duplicates == 3
    assert jb.stats.received == 7


def test_lost_packet_is_recovered_from_the_next_packets_fec() -> None:
    jb = JitterBuffer()
    for i in range(10):
        if i != 4:
            jb.push(packet(i, arrival=0.0))
    assert pop_all(jb, 9) == ["#0", "#1", "#2", "#3", "fec#5", "#5", "#6", "#7", "#8"]
    assert jb.stats.fec_recovered == 1
    assert jb.stats.plc_frames == 0


def test_two_lost_packets_conceal_then_recover_the_second_from_fec() -> None:
    jb = JitterBuffer()
    for i in range(10):
        if i not in (4, 5):
            jb.push(packet(i, arrival=0.0))
    assert pop_all(jb, 9) == ["#0", "#1", "#2", "#3", "plc", "fec#6", "#6", "#7", "#8"]
    assert (jb.stats.plc_frames, jb.stats.fec_recovered) == (1, 1)


def test_packet_arriving_after_its_playout_point_is_dropped_and_raises_target() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    clock.send(packet(i) for i in range(30) if i != 10)
    out = clock.run_until(0.35)
    assert "fec#11" in out
    target_before = jb.stats.target_ms
    jb.push(packet(10, arrival=0.35))
    out += clock.run_until(0.8)
    assert "#10" not in out
    assert [x for x in out if x and x.startswith("#")] == [f"#{i}" for i in range(30) if i != 10]
    assert jb.stats.late_dropped == 1
    assert jb.stats.target_ms == target_before + 20


@pytest.mark.parametrize("lost", [None, 6])
def test_sequence_and_timestamp_wrap_around(lost: int | None) -> None:
    # Packet 6 has sequence 0 and packet 3 timestamp 0: both counters wrap mid-stream.
    jb = JitterBuffer()
    seq0, ts0 = 65530, 2**32 - 3 * 960
    order = [0, 1, 2, 4, 3, 5, 7, 6, 8, 9, 10, 11]
    for i in order:
        if i != lost:
            jb.push(packet(i, arrival=0.0, seq0=seq0, ts0=ts0))
    expected = [f"#{i}" for i in range(12)]
    if lost is not None:
        expected[lost] = f"fec#{lost + 1}"
    assert pop_all(jb, 12) == expected
    assert jb.stats.late_dropped == 0


def test_dtx_gap_across_wrap_is_concealed_not_treated_as_loss() -> None:
    # The sender skipped two frames' worth of timestamps without skipping sequence numbers.
    jb = JitterBuffer()
    clock = Clock(jb)
    seq0, ts0 = 65531, 2**32 - 6 * 960
    clock.send(
        packet(
            i,
            i * FRAME_S + 0.005 + (0.04 if i >= 5 else 0),
            seq0=seq0,
            ts0=ts0,
            ts_index=i + (2 if i >= 5 else 0),
        )
        for i in range(10)
    )
    played = [x for x in clock.run_until(0.4) if x is not None]
    assert played[:8] == ["#0", "#1", "#2", "#3", "#4", "plc", "plc", "#5"]
    assert jb.stats.fec_recovered == 0


def test_dtx_gap_is_shortened_when_buffer_runs_deep() -> None:
    # A talk spurt resuming with everything already buffered: silence is where delay goes.
    jb = JitterBuffer()
    for i in range(10):
        jb.push(packet(i, arrival=0.0, ts_index=i + (20 if i >= 5 else 0)))
    out = pop_all(jb, 8)
    assert out[:5] == ["#0", "#1", "#2", "#3", "#4"]
    assert out.index("#5") <= 7  # not 20 frames of concealment
    assert jb.stats.fec_recovered == 0 and jb.stats.trimmed == 0


@pytest.mark.parametrize("jump", [10**9, -(10**6)])
def test_timestamp_jump_restarts_the_stream(jump: int) -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    clock.send(packet(i) for i in range(20))
    clock.send(packet(i, ts0=(TS0 + jump) % 2**32, seq0=40_000) for i in range(20, 40))
    played = [x for x in clock.run_until(1.0) if x is not None and x.startswith("#")]
    assert played == [f"#{i}" for i in range(40)]
    assert jb.stats.restarts == 1
    assert jb.stats.late_dropped == 0


@pytest.mark.parametrize("pause_s", [0.5, 3.0])
def test_idle_after_a_few_concealed_frames_then_resumes_on_new_packets(pause_s: float) -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    clock.send(packet(i) for i in range(10))
    out = clock.run_until(0.5)
    tail = out[out.index("#9") + 1 :]
    assert tail[:3] == ["plc", "plc", "plc"]
    assert set(tail[3:]) == {None} and len(tail) > 10
    # The talker resumes; browsers keep the RTP clock running through the pause.
    skip = round(pause_s / FRAME_S)
    clock.send(
        packet(i, ts_index=i + skip, arrival=(i + skip) * FRAME_S + 0.005) for i in range(10, 20)
    )
    out = clock.run_until(0.6 + pause_s)
    assert [x for x in out if x is not None] == [f"#{i}" for i in range(10, 20)] + ["plc"] * 3
    assert (jb.stats.underruns, jb.stats.plc_frames) == (2, 6)
    assert (jb.stats.restarts, jb.stats.late_dropped) == (0, 0)


def test_target_grows_under_jitter_and_shrinks_back_when_steady() -> None:
    jb = JitterBuffer()
    clock = Clock(jb)
    rng = random.Random(7)
    steady = range(0, 100)  # 2 s
    jittery = range(100, 150)  # 1 s of delays up to 50 ms
    calm = range(150, 650)  # 10 s
    clock.send(packet(i) for i in steady)
    clock.send(packet(i, i * FRAME_S + 0.005 + rng.uniform(0, 0.05)) for i in jittery)
    clock.send(packet(i) for i in calm)

    clock.run_until(jittery.stop * FRAME_S)
    assert jb.stats.target_ms == JITTER_MAX_MS
    late_after_jitter = jb.stats.late_dropped
    underruns_after_jitter = jb.stats.underruns

    out = clock.run_until(calm.stop * FRAME_S + 0.01)
    assert jb.stats.target_ms <= 40
    assert jb.stats.depth_ms <= 40
    # Getting there costs at most a frame of audio per step down, and nothing else.
    assert jb.stats.trimmed <= 3
    assert jb.stats.late_dropped == late_after_jitter
    assert jb.stats.underruns == underruns_after_jitter
    played = [x for x in out if x and x.startswith("#")]
    assert played[-150:] == [f"#{i}" for i in range(calm.stop - 150, calm.stop)]
    # And the delay a listener hears is back to at most 40 ms.
    last = b"#%d" % (calm.stop - 1)
    assert clock.played_at[last] - (calm.stop - 1) * FRAME_S - 0.005 <= 0.040


def test_one_lost_packet_does_not_leave_the_delay_raised() -> None:
    # aiortc's stock buffer stays at ~300 ms after a single loss; the delay here must return.
    jb = JitterBuffer()
    clock = Clock(jb)
    clock.send(packet(i) for i in range(500) if i != 250)
    clock.run_until(5.0)
    assert jb.stats.target_ms == JITTER_MIN_MS  # a clean path earns the minimum
    out = clock.run_until(10.0)
    # The buffer was dry when 250 fell due: the concealment played then stands in for it,
    # and 251 plays in its own slot (not after 250's FEC, a frame late).
    assert out[out.index("#251") - 1] == "plc" and "fec#251" not in out
    assert jb.stats.target_ms == JITTER_MIN_MS
    assert jb.stats.depth_ms <= JITTER_MIN_MS
    assert clock.played_at[b"#499"] - 499 * FRAME_S - 0.005 <= 0.020
    assert jb.stats.late_dropped == 0


def spiked_arrival(index: int, spike_at_s: float, spike_ms: int, *, spread: bool) -> float:
    """Nominal arrival, except packets due during the spike all arrive when it ends.

    `spread`: the burst takes 1 ms, its first 4 packets at the start, the rest at the end.
    """
    nominal = index * FRAME_S + 0.005
    end_s = spike_at_s + spike_ms / 1000
    if not spike_at_s <= nominal < end_s:
        return nominal
    first_held = math.ceil((spike_at_s - 0.005) / FRAME_S)
    return end_s + (0.001 if spread and index - first_held >= 4 else 0.0)


def play_tick_by_tick(
    clock: Clock, end_s: float, arrivals: dict[str, float]
) -> list[tuple[float, str, float, int]]:
    """(tick time, label, arrival-to-play delay s, target ms) for each packet played."""
    played = []
    while (now := clock.tick * FRAME_S + TICK_PHASE_S) < end_s:
        (out,) = clock.run_until(now + FRAME_S / 2)
        if out is not None and out.startswith("#"):
            played.append((now, out, now - arrivals[out], clock.jb.stats.target_ms))
    return played


@pytest.mark.parametrize(
    ("spike_ms", "tick_inside_burst"),
    [(80, False), (200, False), (200, True)],
    ids=["80ms", "200ms", "200ms-tick-inside-burst"],
)
def test_delay_spike_does_not_leave_lasting_delay(spike_ms: int, tick_inside_burst: bool) -> None:
    # The path holds `spike_ms` of audio, then delivers it at once, and is steady again.
    # 200 ms runs the buffer dry long enough to go idle (playout restarts on the burst);
    # 80 ms does not (the buffer holds, then finds itself several frames deep). A tick can
    # also fall inside the burst: playout resumes on its first packets, the rest pile up.
    jb = JitterBuffer()
    clock = Clock(jb)
    # Inside: the burst arrives at 3.2105-3.2115 s, around the tick at 3.211 s.
    spike_at_s, count = (3.0105 if tick_inside_burst else 3.0), 350
    arrivals = {
        f"#{i}": spiked_arrival(i, spike_at_s, spike_ms, spread=tick_inside_burst)
        for i in range(count)
    }
    clock.send(packet(i, arrivals[f"#{i}"]) for i in range(count))
    clock.run_until(spike_at_s)
    assert jb.stats.target_ms == JITTER_MIN_MS

    played = play_tick_by_tick(clock, count * FRAME_S, arrivals)
    settled_s = spike_at_s + spike_ms / 1000 + 1.0
    settled = [(label, delay, target) for now, label, delay, target in played if now >= settled_s]
    assert len(settled) > 50
    for label, delay, target in settled:
        assert delay <= (target + 20) / 1000, (label, round(delay * 1000), target)
    # In order, nothing dropped as late; the cost is at most the spike's worth of frames.
    indices = [int(label[1:]) for _, label, _, _ in played]
    assert indices == sorted(indices)
    assert jb.stats.late_dropped == 0
    assert jb.stats.trimmed <= spike_ms // 20


@pytest.mark.parametrize("lost", [(250,), (250, 251)])
def test_loss_found_after_its_slot_was_concealed_is_not_replayed_late(
    lost: tuple[int, ...],
) -> None:
    # At the 20 ms minimum target the buffer is dry when a lost packet falls due: the frame
    # is concealed while the playout point holds. The next packet then shows it was lost;
    # playing it again from FEC would add 20 ms that stays until a trim drops audio.
    jb = JitterBuffer()
    clock = Clock(jb)
    count = 400
    arrivals = {f"#{i}": i * FRAME_S + 0.005 for i in range(count)}
    clock.send(packet(i) for i in range(count) if i not in lost)
    clock.run_until(lost[0] * FRAME_S)
    assert jb.stats.target_ms == JITTER_MIN_MS
    plc_before, trimmed_before = jb.stats.plc_frames, jb.stats.trimmed

    played = play_tick_by_tick(clock, (lost[0] + 100) * FRAME_S, arrivals)
    first_after = lost[-1] + 1
    assert played[0][1] == f"#{first_after}"
    for _, label, delay, _ in played:
        assert delay <= JITTER_MIN_MS / 1000, (label, round(delay * 1000))
    assert jb.stats.plc_frames - plc_before == len(lost)
    assert jb.stats.trimmed == trimmed_before  # no audio dropped to get the delay back
    assert (jb.stats.fec_recovered, jb.stats.late_dropped) == (0, 0)


def test_late_packet_whose_slot_was_concealed_still_plays() -> None:
    # Unlike a loss, a packet that is merely late is played when it comes: the playout
    # point held for it, and the frame concealed meanwhile is delay the path needs (the
    # target rises to match), not a slot to skip.
    jb = JitterBuffer()
    clock = Clock(jb)
    arrivals = {i: i * FRAME_S + 0.005 + (0.025 if i == 250 else 0.0) for i in range(300)}
    clock.send(packet(i, arrivals[i]) for i in range(300))
    clock.run_until(250 * FRAME_S)
    assert jb.stats.target_ms == JITTER_MIN_MS
    out = clock.run_until(260 * FRAME_S)
    assert out[:3] == ["plc", "#250", "#251"]
    assert jb.stats.target_ms > JITTER_MIN_MS
    assert (jb.stats.late_dropped, jb.stats.fec_recovered) == (0, 0)
