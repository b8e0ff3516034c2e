"""Reorder and playout buffer for one Opus stream, driven by a 20 ms consumer clock.

Packets are placed by RTP timestamp, so silence the sender skipped (DTX) keeps its place in
time; sequence numbers tell a packet that was lost (conceal it, with FEC from the next
packet when that one is here) from one that was never sent (a DTX gap: plain concealment).

Delay adapts between `JITTER_MIN_MS` and `JITTER_MAX_MS`. When the buffer runs dry the
playout point holds (the frame is concealed and the awaited packet stays playable), which
is what adds delay; arrival jitter and late packets raise the target, which keeps that
delay. After `TARGET_DECAY_AFTER_S` without such signs the target drops a frame, and depth
that stays a frame above target for `TRIM_AFTER_S` loses one frame (DTX gaps are shortened
first, which costs no audio). Depth further above target than that is a burst, not timer
noise: it loses a frame every `FAST_TRIM_AFTER_S`. Playout that resumes mid-stream (after
the buffer ran dry long enough to go idle) starts at target depth, not at the oldest packet
of the burst that ended the wait (and skips that burst's tail too, should a tick fall inside
it: `RESUME_BURST_WINDOW_S`). And frames concealed while waiting stand in for the
packets that turn out lost, rather than being followed by their FEC a frame late. So a
loss or a delay spike leaves at most a frame of delay beyond target, for a few seconds, not
for good (aiortc's stock buffer stays at ~300 ms after one loss).

Every packet is assumed to carry 20 ms, as Discord and browsers send. Synchronous and
clock-free: arrival times come from `OpusPacket.arrival` and the tick time from `pop(now)`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from .packet import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE_HZ, OpusPacket

logger = logging.getLogger(__name__)

JITTER_MIN_MS = 20
JITTER_MAX_MS = 60
JITTER_START_MS = 40
"""Target before anything is known about the path."""
JITTER_TOLERANCE_MS = 1.0
"""Arrival deviations this small are the sender's timer noise, not jitter worth buffering."""
TARGET_DECAY_AFTER_S = 2.0
"""Quiet time (no jitter needing the current target, no late packet) before it drops a frame."""
TRIM_AFTER_S = 2.0
"""How long depth must stay above target before one frame of excess is dropped.

Slow on purpose: a single frame over target comes and goes with where arrivals fall
between ticks, and each trim drops 20 ms of real audio."""
FAST_TRIM_MIN_EXCESS_FRAMES = 2
"""Depth this many frames above target is standing delay (the burst after a delay spike), not
where arrivals fall between ticks: it is trimmed every `FAST_TRIM_AFTER_S`."""
FAST_TRIM_AFTER_S = 0.2
"""Interval between trims of a large excess. At `TRIM_AFTER_S` a 200 ms spike took ~16 s
to drain; at this pace an excess of 8 frames goes in under 2 s, a click per 0.2 s."""
RESUME_BURST_WINDOW_S = 0.05
"""After playout resumes mid-stream, how long a large excess is still skipped at once rather
than trimmed: a tick can land while the burst that ended the wait is still arriving (it took
3.5 ms on loopback), and its tail then piles up behind the packets already playing."""
CONCEAL_MAX_FRAMES = 3
"""Frames concealed into an empty buffer before the stream counts as idle (speaker stopped)."""
RING_FRAMES = 64
"""Slots (1.28 s). A packet further than this from the playout point is a stream restart."""

_MIN_FRAMES = JITTER_MIN_MS // FRAME_MS
_MAX_FRAMES = JITTER_MAX_MS // FRAME_MS

FrameKind = Literal["packet", "fec", "plc"]


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    """What to decode for the next 20 ms.

    `packet`: decode `payload`. `fec`: the frame due now was lost; `payload` is the *next*
    packet, whose in-band FEC recovers it (`OpusDecoder.decode_fec`). `plc`: conceal
    (`OpusDecoder.decode_plc`); `payload` is None.
    """

    kind: FrameKind
    payload: bytes | None


_PLC_FRAME = PlayoutFrame("plc", None)


@dataclass(slots=True)
class JitterStats:
    """Counters since creation, plus the current target and depth."""

    received: int = 0
    late_dropped: int = 0
    """Arrived after its playout point had passed (includes duplicates of played packets)."""
    duplicates: int = 0
    """Arrived while a packet for the same timestamp was still buffered."""
    fec_recovered: int = 0
    plc_frames: int = 0
    """Concealed frames: losses without FEC, DTX gaps and underruns."""
    underruns: int = 0
    """Times the buffer ran dry while playing (speakers stopping count too)."""
    trimmed: int = 0
    """Frames of audio dropped to bring the delay back down to target."""
    restarts: int = 0
    """Timestamp jumps that discarded buffered or playing state (sender restarted)."""
    target_ms: int = JITTER_START_MS
    depth_ms: int = 0
    """Audio buffered ahead of the playout point, gaps included."""


def _signed32(value: int) -> int:
    return (value + 0x8000_0000) % 0x1_0000_0000 - 0x8000_0000


def _signed16(value: int) -> int:
    return (value + 0x8000) % 0x1_0000 - 0x8000


class JitterBuffer:
    """Reorders one Opus stream and decides, once per 20 ms tick, what to play.

    Plain synchronous state: one task owns it (not thread-safe).
    """

    def __init__(self) -> None:
        self.stats = JitterStats()
        self._slots: list[OpusPacket | None] = [None] * RING_FRAMES
        self._count = 0
        self._anchored = False
        self._playing = False
        # Positions are unbounded frame indices; the ring slot is position % RING_FRAMES.
        # Invariant: every buffered packet lies in [_play_pos, _play_pos + RING_FRAMES).
        self._play_pos = 0
        self._play_ts = 0
        self._newest_pos = 0
        self._first_pos = 0
        self._prebuffer_since = 0.0
        self._played_any = False
        self._last_seq: int | None = None
        self._concealed = 0
        self._excess_since: float | None = None
        self._resumed_at: float | None = None
        self._target = JITTER_START_MS // FRAME_MS
        self._target_held_at: float | None = None
        self._prev_arrival: OpusPacket | None = None

    def push(self, packet: OpusPacket) -> None:
        """Add a packet as it arrives, in any order."""
        self.stats.received += 1
        if not self._anchored:
            self._rebase(packet)
            return
        frames = self._frames_from_play(packet.timestamp)
        if frames < 0 and not self._played_any:
            # Reordered ahead of the stream's first packet; nothing has played, so the
            # playout point can still move back to it if the ring spans both.
            newest = self._newest_pos if self._count else self._play_pos
            if newest - (self._play_pos + frames) < RING_FRAMES:
                self._move_play(frames)
                frames = 0
        if not -RING_FRAMES <= frames < RING_FRAMES:
            if self._count or self._playing:
                self.stats.restarts += 1
                logger.info("timestamp jump of %d frames: stream restarted", frames)
            self._rebase(packet)
            return
        if frames < 0:
            self.stats.late_dropped += 1
            self._raise_target(self._target + 1, packet.arrival)
            return
        self._store(packet, self._play_pos + frames)

    def pop(self, now: float) -> PlayoutFrame | None:
        """What to play for the next 20 ms; None while prebuffering or idle (play silence)."""
        self._decay_target(now)
        if not self._playing and not self._start_playout(now):
            return None
        frame = self._next_frame(now)
        self._update_depth()
        return frame

    def _next_frame(self, now: float) -> PlayoutFrame | None:
        stats = self.stats
        if not self._count:
            # Hold the playout point: if the packet is merely late it still plays, and the
            # frame concealed meanwhile is the delay the path turned out to need.
            if not self._concealed:
                stats.underruns += 1
            self._concealed += 1
            if self._concealed > CONCEAL_MAX_FRAMES:
                self._playing = False
                # The sender paused: spacing across the pause says nothing about the network.
                self._prev_arrival = None
                return None
            stats.plc_frames += 1
            return _PLC_FRAME
        concealed, self._concealed = self._concealed, 0
        self._trim_excess(now)
        packet = self._slots[self._play_pos % RING_FRAMES]
        if packet is not None:
            return self._play_packet(packet)
        ahead = 1
        while (following := self._slots[(self._play_pos + ahead) % RING_FRAMES]) is None:
            ahead += 1
        if self._was_lost_before(following):
            # The frames concealed while the buffer was dry already stood in for these lost
            # ones: playing them again (FEC, PLC) would only push everything a frame later
            # per concealed frame, a delay kept until a trim drops real audio.
            replaced = min(ahead, concealed)
            if replaced:
                self._move_play(replaced)
                ahead -= replaced
                if not ahead:
                    return self._play_packet(following)
            self._move_play(1)
            if ahead == 1:
                stats.fec_recovered += 1
                return PlayoutFrame("fec", following.payload)
            stats.plc_frames += 1
            return _PLC_FRAME
        # Nothing was lost: the sender skipped these frames (DTX). Silence is the cheapest
        # place to give back delay, so shorten the gap down to target before concealing it.
        excess = self._newest_pos - self._play_pos + 1 - self._target
        if excess > 0:
            skip = min(ahead, excess)
            self._move_play(skip)
            if skip == ahead:
                return self._play_packet(following)
        self._move_play(1)
        stats.plc_frames += 1
        return _PLC_FRAME

    def _play_packet(self, packet: OpusPacket) -> PlayoutFrame:
        self._take(packet)
        self._move_play(1)
        return PlayoutFrame("packet", packet.payload)

    def _take(self, packet: OpusPacket) -> None:
        self._slots[self._play_pos % RING_FRAMES] = None
        self._count -= 1
        self._last_seq = packet.sequence
        self._played_any = True

    def _was_lost_before(self, packet: OpusPacket) -> bool:
        """Whether the sender sent anything between the last played packet and `packet`."""
        return self._last_seq is None or _signed16(packet.sequence - self._last_seq) > 1

    def _trim_excess(self, now: float) -> None:
        excess = self._newest_pos - self._play_pos + 1 - self._target
        if excess <= 0:
            self._excess_since = None
            return
        if (
            excess >= FAST_TRIM_MIN_EXCESS_FRAMES
            and self._resumed_at is not None
            and now - self._resumed_at <= RESUME_BURST_WINDOW_S
        ):
            # The rest of the burst playout resumed on: one jump to target, as at the resume
            # itself, costs the same audio as trimming it but one click instead of many.
            for _ in range(excess):
                self._drop_frame()
            self._excess_since = None
            return
        if self._excess_since is None:
            self._excess_since = now
            return
        wait_s = FAST_TRIM_AFTER_S if excess >= FAST_TRIM_MIN_EXCESS_FRAMES else TRIM_AFTER_S
        if now - self._excess_since < wait_s:
            return
        self._drop_frame()
        # If depth is still over target, the next trim is due a full interval after this one.
        self._excess_since = now

    def _drop_frame(self) -> None:
        """Give up the frame at the playout point (audio or gap) to cut a frame of delay."""
        packet = self._slots[self._play_pos % RING_FRAMES]
        if packet is not None:
            self._take(packet)
        self._move_play(1)
        self.stats.trimmed += 1

    def _start_playout(self, now: float) -> bool:
        if not self._count:
            return False
        depth = self._newest_pos - self._first_pos + 1
        waited_ms = (now - self._prebuffer_since) * 1000
        if depth < self._target and waited_ms < self._target * FRAME_MS:
            return False
        self._move_play(self._first_pos - self._play_pos)
        if self._played_any:
            # Resuming mid-stream after running dry: whatever piled up beyond target arrived
            # in a burst (a delay spike, a stalled sender), and playing it all from the oldest
            # packet would keep the whole spike as delay. Listeners already heard the gap as
            # concealment then silence, so skip to target depth. The stream's first start
            # keeps everything: nothing has been heard yet, and fast trim bounds the cost.
            while self._newest_pos - self._play_pos + 1 > self._target:
                self._drop_frame()
            self._resumed_at = now
        self._playing = True
        self._concealed = 0
        self._excess_since = None
        return True

    def _store(self, packet: OpusPacket, position: int) -> None:
        index = position % RING_FRAMES
        if self._slots[index] is not None:
            self.stats.duplicates += 1
            return
        self._slots[index] = packet
        if not self._count:
            self._newest_pos = self._first_pos = position
            self._prebuffer_since = packet.arrival
        else:
            self._newest_pos = max(self._newest_pos, position)
            self._first_pos = min(self._first_pos, position)
        self._count += 1
        self._observe_jitter(packet)
        self._update_depth()

    def _rebase(self, packet: OpusPacket) -> None:
        """Start a new timeline at `packet` (first packet, resuming after idle, restart).

        It goes right after anything still buffered, so a restart loses nothing already here.
        """
        if self._count and self._newest_pos + 1 - self._play_pos >= RING_FRAMES:
            self._slots = [None] * RING_FRAMES
            self._count = 0
        position = self._newest_pos + 1 if self._count else self._play_pos
        if not self._count:
            self._playing = False
            self._played_any = False
        self._anchored = True
        frames_ahead = position - self._play_pos
        self._play_ts = (packet.timestamp - frames_ahead * FRAME_SAMPLES) & 0xFFFF_FFFF
        self._prev_arrival = None
        self._store(packet, position)

    def _frames_from_play(self, timestamp: int) -> int:
        offset = _signed32(timestamp - self._play_ts)
        return (offset + FRAME_SAMPLES // 2) // FRAME_SAMPLES

    def _move_play(self, frames: int) -> None:
        self._play_pos += frames
        self._play_ts = (self._play_ts + frames * FRAME_SAMPLES) & 0xFFFF_FFFF

    def _observe_jitter(self, packet: OpusPacket) -> None:
        # RFC 3550's transit difference against the previous arrival, whatever the send
        # order: a packet D ms later than its predecessor's pace needs D ms more buffer.
        prev = self._prev_arrival
        self._prev_arrival = packet
        if prev is None or abs(_signed16(packet.sequence - prev.sequence)) > RING_FRAMES:
            return
        sent_s = _signed32(packet.timestamp - prev.timestamp) / SAMPLE_RATE_HZ
        deviation_ms = (packet.arrival - prev.arrival - sent_s) * 1000
        excess_ms = max(deviation_ms - JITTER_TOLERANCE_MS, 0.0)
        self._raise_target(1 + math.ceil(excess_ms / FRAME_MS), packet.arrival)

    def _raise_target(self, frames: int, at: float) -> None:
        frames = min(frames, _MAX_FRAMES)
        if frames >= self._target:
            self._target_held_at = at
            if frames > self._target:
                self._target = frames
                self.stats.target_ms = frames * FRAME_MS
        elif self._target_held_at is None:
            self._target_held_at = at

    def _decay_target(self, now: float) -> None:
        if self._target_held_at is None or self._target <= _MIN_FRAMES:
            return
        if now - self._target_held_at >= TARGET_DECAY_AFTER_S:
            self._target -= 1
            self.stats.target_ms = self._target * FRAME_MS
            self._target_held_at = now

    def _update_depth(self) -> None:
        if not self._count:
            self.stats.depth_ms = 0
            return
        start = self._play_pos if self._playing else self._first_pos
        self.stats.depth_ms = (self._newest_pos - start + 1) * FRAME_MS
