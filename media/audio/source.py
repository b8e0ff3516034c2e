"""`OpusSource`: pre-encoded Opus packets in, a paced aiortc send track out (no re-encode).

The caller pushes packets as they are made (a Discord speaker, a test generator); each peer
connection gets its own `track()` reading from the same source, so a connection rebuilt after
a failure keeps sending what the caller keeps pushing. Packets carry their own RTP
timestamps: a gap in them (DTX, a speaker pausing) becomes a gap in the sent timestamps, as
Opus receivers expect.

Pacing is anchored on *push* times: a packet is due at the anchor's push time plus its
timestamp distance from the anchor. A burst pushed at once leaves at its timestamps' rate; a
packet already due (the sender task woke late, the loop stalled) leaves at once, so a backlog
drains instead of becoming standing delay; a producer slower than its timestamps (a pause
without a timestamp gap, clock drift) moves the anchor to its own push time.
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
MAX_EARLY_S = 1.0
"""A packet due further ahead than this (a timestamp jump or restart) re-anchors pacing."""


class OpusSource:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self._queue: collections.deque[tuple[bytes, int, float]] = collections.deque()
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
        self._queue.append((payload, timestamp, time.monotonic()))
        self.pushed += 1
        self._ready.set()

    def track(self) -> OpusSourceTrack:
        """A fresh send track for one connection; the previous one stops receiving packets."""
        if self._track is not None:
            self._track.stop()
        self._track = OpusSourceTrack(self)
        return self._track

    async def _next(self) -> tuple[bytes, int, float]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class OpusSourceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: OpusSource) -> None:
        super().__init__()
        self._source = source
        self._anchor: tuple[float, int] | None = None  # (push time, timestamp)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        payload, timestamp, pushed_at = await self._source._next()
        if self.readyState != "live":
            raise MediaStreamError
        if self._anchor is None:
            self._anchor = (pushed_at, timestamp)
        due = self._anchor[0] + ((timestamp - self._anchor[1]) & 0xFFFFFFFF) / SAMPLE_RATE_HZ
        if pushed_at > due or due > pushed_at + MAX_EARLY_S:
            self._anchor = (pushed_at, timestamp)
            due = pushed_at
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet
