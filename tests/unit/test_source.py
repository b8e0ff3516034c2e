"""OpusSource pacing: bursts are spread at their timestamps' rate, backlogs drain."""

from __future__ import annotations

import asyncio
import time

import pytest

from media.audio.source import OpusSource

FRAME = 960


async def send_times(source: OpusSource, count: int) -> list[float]:
    track = source.track()
    times = []
    for _ in range(count):
        await track.recv()
        times.append(time.monotonic())
    track.stop()
    return times


@pytest.mark.timeout(5)
async def test_a_burst_is_paced_at_twenty_ms():
    source = OpusSource()
    for index in range(10):
        source.push(b"\xfc\x00", index * FRAME)
    times = await send_times(source, 10)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.015 < gap < 0.035 for gap in gaps), gaps


@pytest.mark.timeout(5)
async def test_a_late_reader_drains_the_backlog_instead_of_keeping_the_delay():
    source = OpusSource()
    track = source.track()
    source.push(b"\xfc\x00", 0)
    await track.recv()
    started = time.monotonic()
    # The producer keeps real time while the sender is stalled for 200 ms.
    for index in range(1, 11):
        source.push(b"\xfc\x00", index * FRAME)
        await asyncio.sleep(0.02)
    for _ in range(10):
        await track.recv()
    # All ten were due by now: they go out at once, not another 200 ms later.
    assert time.monotonic() - started < 0.3
    track.stop()


@pytest.mark.timeout(5)
async def test_timestamps_ahead_of_the_clock_reanchor_rather_than_wait():
    source = OpusSource()
    source.push(b"\xfc\x00", 0)
    source.push(b"\xfc\x00", 48_000 * 10)  # a ten-second jump: a new talk spurt
    times = await send_times(source, 2)
    assert times[1] - times[0] < 0.05
