"""Bridges in tests: one started in a room, a speaker feeding it a tone in real time, and its
output read on a 20 ms clock (as Discord's player reads it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np

from media.backoff import Backoff
from media.bridge import Bridge, BridgeConfig
from media.peer import PeerConfig
from media.realtime import RealtimeClient
from media.rooms import RoomDirectory
from tests.support.opus_source import encode_tone

__all__ = ["FAST_PEER", "bridge_in", "record", "speaking"]

FAST_PEER = PeerConfig(recovery=Backoff(initial_s=0.05, max_s=0.5))


@contextlib.asynccontextmanager
async def bridge_in(
    room: str,
    client: RealtimeClient,
    directory: RoomDirectory,
    member: str,
    peer: PeerConfig = FAST_PEER,
) -> AsyncIterator[Bridge]:
    bridge = Bridge(room, client, directory, BridgeConfig(member, member, peer=peer))
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


@contextlib.asynccontextmanager
async def speaking(bridge: Bridge, name: str, frequency_hz: float) -> AsyncIterator[None]:
    """Speaker `name` of `bridge` says a tone, one Opus packet every 20 ms of wall clock."""
    packets = encode_tone(frequency_hz, 50)
    speaker = bridge.speaker(name, display_name=name)

    async def feed() -> None:
        start = time.monotonic()
        index = 0
        while True:
            speaker.push(packets[index % len(packets)])
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - time.monotonic()))

    task = asyncio.create_task(feed(), name=f"speaking-{name}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def record(bridge: Bridge, seconds: float) -> np.ndarray:
    """`seconds` of the bridge's output, read on its 20 ms clock."""
    frames = []
    async for frame in bridge.frames():
        frames.append(frame.copy())
        if len(frames) >= seconds * 50:
            return np.concatenate(frames)
    raise AssertionError("unreachable")
