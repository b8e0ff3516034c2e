"""`InboundOpus`: the receiving end of one subscribed track, as Opus packets (no decode).

It is the handle a caller keeps for a subscription: the peer feeds it from an RTP tap, and
keeps feeding the same object after it rebuilt its connection. It also keeps the receive
statistics (RFC 3550 loss and interarrival jitter) that the tap sees.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from .packet import SAMPLE_RATE_HZ, OpusPacket

__all__ = ["InboundOpus", "InboundStats"]

INBOUND_QUEUE_PACKETS = 50
"""A consumer more than 1 s behind loses the oldest packets (counted)."""


@dataclass(frozen=True, slots=True)
class InboundStats:
    packets: int
    bytes: int
    lost: int
    jitter_ms: float
    dropped: int


class InboundOpus:
    def __init__(
        self, session_id: str, track_name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.session_id = session_id
        self._clock = clock  # arrival times: tests replay a stream on a virtual clock
        self.track_name = track_name
        self._queue: collections.deque[OpusPacket] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._packets = 0
        self._bytes = 0
        self._dropped = 0
        self._base_seq: int | None = None
        self._max_seq = 0  # extended (unwrapped)
        self._received_since_base = 0
        self._lost_before = 0  # loss counted on earlier connections
        self._transit: float | None = None
        self._jitter = 0.0  # in timestamp units
        self.on_feed: Callable[[], None] | None = None
        """Called after each packet is queued (a consumer that polls can sleep until then)."""

    def feed(self, payload: bytes, timestamp: int, sequence: int) -> None:
        now = self._clock()
        self._account(timestamp, sequence, now)
        self._bytes += len(payload)
        if len(self._queue) >= INBOUND_QUEUE_PACKETS:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(OpusPacket(payload, timestamp, sequence, now))
        self._ready.set()
        if self.on_feed is not None:
            self.on_feed()

    def restart(self) -> None:
        """The sender changed (new connection): sequence numbering starts afresh, and what
        was queued from the old one is stale."""
        self._queue.clear()
        self._lost_before = self._lost()
        self._base_seq = None
        self._received_since_base = 0
        self._transit = None

    def _account(self, timestamp: int, sequence: int, now: float) -> None:
        self._packets += 1
        self._received_since_base += 1
        if self._base_seq is None:
            self._base_seq = sequence
            self._max_seq = sequence
        else:
            delta = (sequence - (self._max_seq & 0xFFFF)) & 0xFFFF
            if delta < 0x8000:
                self._max_seq += delta
        transit = now * SAMPLE_RATE_HZ - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < SAMPLE_RATE_HZ:  # ignore timestamp jumps (DTX gaps, restarts)
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def _lost(self) -> int:
        expected = 0 if self._base_seq is None else self._max_seq - self._base_seq + 1
        return self._lost_before + max(expected - self._received_since_base, 0)

    def stats(self) -> InboundStats:
        return InboundStats(
            packets=self._packets,
            bytes=self._bytes,
            lost=self._lost(),
            jitter_ms=self._jitter / SAMPLE_RATE_HZ * 1000,
            dropped=self._dropped,
        )

    async def recv(self) -> OpusPacket:
        """The next packet; raises EOFError once the subscription is closed."""
        while not self._queue:
            if self._closed:
                raise EOFError(f"subscription {self.session_id}/{self.track_name} closed")
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def poll(self) -> OpusPacket | None:
        """The next packet if one is waiting (for a consumer driven by its own clock)."""
        return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        self._closed = True
        self._ready.set()
