"""Drive an `OpusSource` in real time, as a Discord speaker would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import numpy as np

from media.audio import FRAME_SAMPLES, OpusDecoder, OpusPacket
from media.audio.inbound import InboundOpus
from media.audio.source import OpusSource

from .opus_source import encode_tone


async def _feed(source: OpusSource, packets: Sequence[bytes]) -> None:
    start = time.monotonic()
    index = 0
    while True:
        source.push(packets[index % len(packets)], index * FRAME_SAMPLES)
        index += 1
        await asyncio.sleep(max(0.0, start + index * 0.02 - time.monotonic()))


@contextlib.asynccontextmanager
async def feeding(source: OpusSource, frequency_hz: float) -> AsyncIterator[None]:
    task = asyncio.create_task(_feed(source, encode_tone(frequency_hz, 50)))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def receive_pcm(inbound: InboundOpus, seconds: float) -> np.ndarray:
    """Decode what arrives for `seconds` of packets."""
    decoder = OpusDecoder(channels=1)
    chunks = []
    for _ in range(int(seconds * 50)):
        packet: OpusPacket = await inbound.recv()
        chunks.append(decoder.decode(packet.payload))
    decoder.close()
    return np.concatenate(chunks)


async def drain(inbound: InboundOpus) -> int:
    count = 0
    while inbound.poll() is not None:
        count += 1
    return count
