"""`OpusSource`: pre-encoded Opus packets in, a paced aiortc send track out (no re-encode).

The caller pushes packets as they are made (a Discord speaker, a test generator); each peer
connection gets its own `track()` reading from the same source, so a connection rebuilt after
a failure keeps sending what the caller keeps pushing. Packets carry their own RTP
timestamps: a gap in them (DTX, a speaker pausing) becomes a gap in the sent timestamps, as
Opus receivers expect. Bursts are paced out at their timestamps' rate from a wall-clock
anchor, re-anchored after a pause so a late packet is never held back.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .packet import FRAME_SAMPLES, SAMPLE_RATE_HZ

__all__ = ["OpusSource", "OpusSourceTrack"]

logger = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
SOURCE_QUEUE_PACKETS = 25
"""At most 500 ms waits to be sent; older packets are dropped (and counted)."""
REANCHOR_AFTER_S = 0.2
"""A packet due further in the past than this restarts pacing from now."""


class OpusSource:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._ready = asyncio.Event()
        self._next_timestamp = 0
        self._track: OpusSourceTrack | None = None
        self.pushed = 0
        self.dropped = 0

    def push(self, payload: bytes, timestamp: int | None = None) -> None:
        """Queue one 20 ms Opus packet; `timestamp` in 48 kHz units, default: right after the last."""
        if timestamp is None:
            timestamp = self._next_timestamp
        self._next_timestamp = timestamp + FRAME_SAMPLES
        if len(self._queue) >= SOURCE_QUEUE_PACKETS:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((payload, timestamp))
        self.pushed += 1
        self._ready.set()

    def track(self) -> OpusSourceTrack:
        """A fresh send track for one connection; the previous one stops receiving packets."""
        if self._track is not None:
            self._track.stop()
        self._track = OpusSourceTrack(self)
        return self._track

    async def _next(self) -> tuple[bytes, int]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class OpusSourceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: OpusSource) -> None:
        super().__init__()
        self._source = source
        self._anchor: tuple[float, int] | None = None  # (monotonic s, timestamp)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        payload, timestamp = await self._source._next()
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, timestamp)
        due = self._anchor[0] + ((timestamp - self._anchor[1]) & 0xFFFFFFFF) / SAMPLE_RATE_HZ
        if due > now + 1.0 or due < now - REANCHOR_AFTER_S:
            self._anchor = (now, timestamp)  # a pause, a restart or a wrap: start again
        elif due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet
