"""`RoomFollower`: keeps one peer subscribed to every track of a room but its own member's.

Reconcile, don't react. What it wants comes from a directory snapshot plus the events that
follow it; what it has is the peer's subscriptions; one loop closes the difference. Events,
a peer recovery and a lost event stream only wake the loop, so no path can subscribe a track
twice or forget one: a lost stream is re-entered with a fresh snapshot (and logged), a
recovery re-pulls what the loop already wants. This is the one place that retries a pull:
a track whose publisher is not sending yet is tried again on a backoff, never under a lock.
The bridge follows its room with it; anything else that must hear a room can too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from .audio.inbound import InboundOpus
from .backoff import Backoff
from .peer import PeerUnavailable, RealtimePeer
from .realtime import TrackLocator
from .rooms import (
    Member,
    MemberLeft,
    RoomDirectory,
    RoomEvent,
    TrackInfo,
    TrackPublished,
    TrackRemoved,
)

__all__ = ["FollowerStats", "RoomFollower", "SubscriptionSink"]

logger = logging.getLogger(__name__)

PULL_RETRY = Backoff(initial_s=0.1, max_s=2.0)
"""A wanted track that could not be pulled (its publisher is not sending yet, or the SFU
failed) is tried again after this, for as long as the room says it exists."""
RESYNC_RETRY = Backoff(initial_s=0.1, max_s=2.0)
"""Re-entering a room's event stream after it ended or the directory failed."""
PATIENT_ATTEMPTS = 20
"""Pull failures of one track before it is logged as a warning (then every this many)."""


class SubscriptionSink(Protocol):
    """Where subscriptions go: the bridge feeds them to its mixdown."""

    def added(self, track: TrackInfo, inbound: InboundOpus) -> None: ...

    def removed(self, track: TrackInfo) -> None: ...


@dataclass(slots=True)
class FollowerStats:
    resyncs: int = 0
    """Times the event stream was re-entered after it ended or failed."""
    pulls: int = 0
    """Tracks pulled successfully."""
    pull_failures: int = 0
    """Pull attempts that failed (retried)."""


@dataclass(slots=True)
class _Retry:
    attempts: int = 0
    not_before: float = 0.0


class RoomFollower:
    def __init__(
        self,
        room: str,
        member_id: str,
        directory: RoomDirectory,
        peer: RealtimePeer,
        sink: SubscriptionSink,
        *,
        pull_retry: Backoff = PULL_RETRY,
        resync_retry: Backoff = RESYNC_RETRY,
    ) -> None:
        self.room = room
        self.member_id = member_id
        self._directory = directory
        self._peer = peer
        self._sink = sink
        self._pull_retry = pull_retry
        self._resync_retry = resync_retry
        self._wanted: dict[TrackLocator, tuple[str, TrackInfo]] = {}  # -> (member id, track)
        self._have: dict[TrackLocator, tuple[TrackInfo, InboundOpus]] = {}
        self._retry: dict[TrackLocator, _Retry] = {}
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = FollowerStats()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the room; returns once the first snapshot is taken."""
        self._tasks = [
            asyncio.create_task(self._watch(), name=f"follower-events-{self.room}"),
            asyncio.create_task(self._reconcile_forever(), name=f"follower-loop-{self.room}"),
        ]
        await self._synced.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def wake(self) -> None:
        """Something changed outside the directory (the peer recovered): look again."""
        self._wake.set()

    def wanted(self) -> frozenset[TrackInfo]:
        return frozenset(track for _, track in self._wanted.values())

    def heard(self) -> frozenset[TrackInfo]:
        """Wanted tracks that are pulled on the peer's current session."""
        return frozenset(t for t, inbound in self._have.values() if self._peer.is_live(inbound))

    # -- what is wanted: the directory -------------------------------------------------------

    async def _watch(self) -> None:
        delays = self._resync_retry.delays()
        while True:
            try:
                async with self._directory.events(self.room) as stream:
                    self._resync(await self._directory.members(self.room))
                    delays = self._resync_retry.delays()
                    async for event in stream:
                        self._apply(event)
                logger.warning(
                    "room event stream ended, resyncing room=%s member=%s",
                    self.room,
                    self.member_id,
                )
            except Exception:
                logger.exception(
                    "room directory failed, resyncing room=%s member=%s", self.room, self.member_id
                )
            self.stats.resyncs += 1
            await asyncio.sleep(next(delays, self._resync_retry.max_s))

    def _resync(self, members: list[Member]) -> None:
        self._wanted = {
            TrackLocator(track.session_id, track.track_name): (member.member_id, track)
            for member in members
            if member.member_id != self.member_id
            for track in member.tracks
        }
        self._synced.set()
        self._wake.set()

    def _apply(self, event: RoomEvent) -> None:
        if isinstance(event, TrackPublished) and event.member_id != self.member_id:
            locator = TrackLocator(event.track.session_id, event.track.track_name)
            self._wanted[locator] = (event.member_id, event.track)
        elif isinstance(event, TrackRemoved):
            self._wanted.pop(TrackLocator(event.track.session_id, event.track.track_name), None)
        elif isinstance(event, MemberLeft):
            # A shared directory may expire a crashed member without removing its tracks.
            for locator, (member_id, _) in list(self._wanted.items()):
                if member_id == event.member_id:
                    del self._wanted[locator]
        else:
            return
        self._wake.set()

    # -- closing the difference --------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            timeout = self._next_retry_in()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._reconcile()
            except Exception:
                logger.exception("reconcile failed room=%s member=%s", self.room, self.member_id)
                await asyncio.sleep(self._pull_retry.max_s)

    def _next_retry_in(self) -> float | None:
        pending = [
            r.not_before
            for locator, r in self._retry.items()
            if locator in self._have and not self._peer.is_live(self._have[locator][1])
        ]
        return max(0.0, min(pending) - time.monotonic()) if pending else None

    async def _reconcile(self) -> None:
        for locator, (track, inbound) in list(self._have.items()):
            if locator not in self._wanted:
                del self._have[locator]
                self._retry.pop(locator, None)
                self._sink.removed(track)
                await self._peer.unsubscribe(inbound)
                logger.info(
                    "stopped hearing room=%s member=%s track=%s/%s",
                    self.room,
                    self.member_id,
                    locator.session_id,
                    locator.track_name,
                )
        for locator, (_, track) in list(self._wanted.items()):
            if locator not in self._have:
                inbound = self._peer.inbound(locator.session_id, locator.track_name)
                self._have[locator] = (track, inbound)
                self._sink.added(track, inbound)
        now = time.monotonic()
        due = {
            inbound: locator
            for locator, (_, inbound) in self._have.items()
            if not self._peer.is_live(inbound)
            and self._retry.get(locator, _Retry()).not_before <= now
        }
        if not due:
            return
        failures = await self._peer.pull(due)
        for inbound, locator in due.items():
            error = failures.get(inbound)
            if error is None:
                self._retry.pop(locator, None)
                self.stats.pulls += 1
                logger.info(
                    "hears room=%s member=%s track=%s/%s",
                    self.room,
                    self.member_id,
                    locator.session_id,
                    locator.track_name,
                )
            elif isinstance(error, PeerUnavailable):
                pass  # RECOVERED wakes the loop; the recovery re-pulls it once itself
            else:
                self._schedule_retry(locator, error)

    def _schedule_retry(self, locator: TrackLocator, error: Exception) -> None:
        retry = self._retry.setdefault(locator, _Retry())
        retry.attempts += 1
        retry.not_before = time.monotonic() + self._pull_retry.delay_s(retry.attempts)
        self.stats.pull_failures += 1
        level = logging.WARNING if retry.attempts % PATIENT_ATTEMPTS == 0 else logging.DEBUG
        logger.log(
            level,
            "pull retry room=%s member=%s track=%s/%s attempts=%d error=%s",
            self.room,
            self.member_id,
            locator.session_id,
            locator.track_name,
            retry.attempts,
            error,
        )
