"""`OpusSource`: pre-encoded Opus packets in, a paced aiortc send track out (no re-encode).

The caller pushes packets as they are made (a Discord speaker, a test generator); each peer
connection gets its own `track()` reading from the same source, so a connection rebuilt after
a failure keeps sending what the caller keeps pushing. Packets carry their own RTP
timestamps: a gap in them (DTX, a speaker pausing) becomes a gap in the sent timestamps, as
Opus receivers expect.

Packets leave as soon as they are pushed, except that a burst (a backlog after the producer
or the loop stalled, a batch pushed at once) is spread out at `DRAIN_SPEEDUP` times real
time: each packet waits until its timestamp distance from the previous one, divided by that
factor, has passed since the previous one left — and never longer than one frame. So a backlog
drains quickly instead of becoming standing delay, receivers' jitter buffers are not hit by a
wall of packets, and one late packet never delays the ones behind it.
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
from av.frame import Frame

from .packet import FRAME_SAMPLES, SAMPLE_RATE_HZ

__all__ = ["OpusSource", "OpusSourceTrack"]

logger = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
SOURCE_QUEUE_PACKETS = 25
"""At most 500 ms waits to be sent; older packets are dropped (and counted)."""
DRAIN_SPEEDUP = 4.0
"""A backlog leaves at up to this multiple of real time."""
MAX_HOLD_S = FRAME_SAMPLES / SAMPLE_RATE_HZ
"""No packet is held longer than one frame, whatever its timestamp says (jumps, restarts)."""


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
        """Queue one 20 ms Opus packet; `timestamp` in 48 kHz units (default: right after the
        last one)."""
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

    @property
    def queued(self) -> int:
        """Packets pushed and not yet taken by a send track."""
        return len(self._queue)

    async def _next(self, track: OpusSourceTrack) -> tuple[bytes, int] | None:
        """The next packet, or None once `track` has been handed over while it waited."""
        while not self._queue:
            if track.successor is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def _wake(self) -> None:
        self._ready.set()


class OpusSourceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: OpusSource) -> None:
        super().__init__()
        self._source = source
        self._previous: tuple[float, int] | None = None  # (sent at, timestamp)
        self.successor: MediaStreamTrack | None = None

    def hand_over(self, successor: MediaStreamTrack) -> None:
        """The sender now reads `successor`; a `recv()` waiting on the source moves to it."""
        self.successor = successor
        self._source._wake()

    async def recv(self) -> Frame | av.Packet:
        if self.successor is not None:
            return await self.successor.recv()
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._source._next(self)
        if item is None:
            assert self.successor is not None
            return await self.successor.recv()
        if self.readyState != "live":
            raise MediaStreamError
        payload, timestamp = item
        if self._previous is not None:
            sent_at, previous = self._previous
            spacing = ((timestamp - previous) & 0xFFFFFFFF) / SAMPLE_RATE_HZ / DRAIN_SPEEDUP
            wait = min(sent_at + spacing - time.monotonic(), MAX_HOLD_S)
            if wait > 0:
                await asyncio.sleep(wait)
        self._previous = (time.monotonic(), timestamp)
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet
