"""OpusSource pacing: packets leave when pushed; bursts are spread, backlogs drain fast."""

from __future__ import annotations

import asyncio
import time

import pytest

from media.audio.source import DRAIN_SPEEDUP, OpusSource

FRAME = 960
FRAME_S = 0.02


async def send_times(source: OpusSource, count: int) -> list[float]:
    track = source.track()
    times = []
    for _ in range(count):
        await track.recv()
        times.append(time.monotonic())
    track.stop()
    return times


@pytest.mark.timeout(5)
async def test_a_burst_is_spread_but_drains_faster_than_real_time():
    source = OpusSource()
    for index in range(10):
        source.push(b"\xfc\x00", index * FRAME)
    times = await send_times(source, 10)
    gaps = [b - a for a, b in zip(times, times[1:])]
    expected = FRAME_S / DRAIN_SPEEDUP
    assert all(expected * 0.7 < gap < expected + 0.012 for gap in gaps), gaps
    assert times[-1] - times[0] < 9 * FRAME_S / 2


@pytest.mark.timeout(5)
async def test_one_late_packet_does_not_delay_the_ones_behind_it():
    source = OpusSource()
    track = source.track()
    delays = []
    for index in range(30):
        late = 0.015 if index == 10 else 0.0
        await asyncio.sleep(FRAME_S + late if index else 0)
        pushed = time.monotonic()
        source.push(b"\xfc\x00", index * FRAME)
        await track.recv()
        delays.append(time.monotonic() - pushed)
    track.stop()
    # Only the packet right after the late one may wait (a fraction of a frame); no ratchet.
    assert max(delays[12:]) < 0.003, delays
    assert max(delays) < FRAME_S / DRAIN_SPEEDUP + 0.003, delays


@pytest.mark.timeout(5)
async def test_a_timestamp_jump_holds_a_packet_one_frame_at_most():
    source = OpusSource()
    source.push(b"\xfc\x00", 0)
    source.push(b"\xfc\x00", 48_000 * 10)  # a ten-second jump: a new talk spurt
    times = await send_times(source, 2)
    assert times[1] - times[0] < FRAME_S + 0.01
