"""OpusSource pacing: packets leave when pushed; bursts are spread, backlogs drain fast.

Judged on a virtual clock that moves only when the source or the test sleeps, so the pacing
decisions are exact and a loaded machine cannot shift them.
"""

from __future__ import annotations

import asyncio
import itertools
import types

import pytest

from media.audio import source as source_module
from media.audio.source import DRAIN_SPEEDUP, OpusSource

FRAME = 960
FRAME_S = 0.02
EPSILON_S = 1e-9


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    virtual = VirtualClock()
    monkeypatch.setattr(source_module, "time", types.SimpleNamespace(monotonic=virtual.monotonic))
    patched_asyncio = types.SimpleNamespace(**vars(asyncio))
    patched_asyncio.sleep = virtual.sleep
    monkeypatch.setattr(source_module, "asyncio", patched_asyncio)
    return virtual


async def send_times(clock: VirtualClock, source: OpusSource, count: int) -> list[float]:
    track = source.track()
    times = []
    for _ in range(count):
        await track.recv()
        times.append(clock.monotonic())
    track.stop()
    return times


@pytest.mark.timeout(5)
async def test_a_burst_is_spread_but_drains_faster_than_real_time(clock):
    source = OpusSource()
    for index in range(10):
        source.push(b"\xfc\x00", index * FRAME)
    times = await send_times(clock, source, 10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    expected = FRAME_S / DRAIN_SPEEDUP
    assert all(abs(gap - expected) < EPSILON_S for gap in gaps), gaps
    assert times[-1] - times[0] < 9 * FRAME_S / 2


@pytest.mark.timeout(5)
async def test_one_late_packet_does_not_delay_the_ones_behind_it(clock):
    source = OpusSource()
    track = source.track()
    delays = []
    for index in range(30):
        late = 0.015 if index == 10 else 0.0
        await clock.sleep(FRAME_S + late if index else 0)
        pushed = clock.monotonic()
        source.push(b"\xfc\x00", index * FRAME)
        await track.recv()
        delays.append(clock.monotonic() - pushed)
    track.stop()
    # Only the packet right after the late one may wait (a fraction of a frame); no ratchet.
    assert max(delays[12:]) < EPSILON_S, delays
    assert max(delays) <= FRAME_S / DRAIN_SPEEDUP + EPSILON_S, delays


@pytest.mark.timeout(5)
async def test_a_timestamp_jump_holds_a_packet_one_frame_at_most(clock):
    source = OpusSource()
    source.push(b"\xfc\x00", 0)
    source.push(b"\xfc\x00", 48_000 * 10)  # a ten-second jump: a new talk spurt
    times = await send_times(clock, source, 2)
    assert times[1] - times[0] <= FRAME_S + EPSILON_S
