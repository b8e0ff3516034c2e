"""The room directory: who is in which room, what they publish, who is speaking.

Cloudflare Realtime has no rooms; Switchboard keeps them. Every caller goes through the
async `RoomDirectory` interface, and nothing outside it assumes that a room's members live in
this process, so a shared implementation (Redis hashes with expiring member entries and a
pub/sub channel per room, docs/scale-out.md §3) can replace `InMemoryDirectory` without touching
callers. Events are typed values delivered per room to each subscriber, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import Enum

__all__ = [
    "InMemoryDirectory",
    "Member",
    "MemberJoined",
    "MemberKind",
    "MemberLeft",
    "RoomDirectory",
    "RoomEvent",
    "SpeakingChanged",
    "TrackInfo",
    "TrackKind",
    "TrackPublished",
    "TrackRemoved",
]

logger = logging.getLogger(__name__)

EVENT_QUEUE_LIMIT = 1000
"""A subscriber that falls this far behind is dropped (and told so) rather than grow."""


class MemberKind(Enum):
    DISCORD = "discord"
    WEB = "web"
    OTHER = "other"


class TrackKind(Enum):
    AUDIO = "audio"
    """An Opus track, pulled with `tracks/new`."""
    CHAT = "chat"
    """A DataChannel carrying chat (`media/chat/message.py`), pulled with `datachannels/new`;
    its `track_name` is the channel's name."""


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A publication in a room: a Realtime (session id, track or channel name) plus who it is."""

    session_id: str
    track_name: str
    display_name: str = ""
    user_id: str | None = None
    kind: TrackKind = TrackKind.AUDIO


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    kind: MemberKind
    display_name: str
    tracks: tuple[TrackInfo, ...] = ()
    speaking: frozenset[str] = frozenset()
    """Track names currently speaking."""
    joined_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class MemberJoined:
    room: str
    member: Member


@dataclass(frozen=True, slots=True)
class MemberLeft:
    room: str
    member_id: str


@dataclass(frozen=True, slots=True)
class TrackPublished:
    room: str
    member_id: str
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackRemoved:
    room: str
    member_id: str
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class SpeakingChanged:
    room: str
    member_id: str
    track_name: str
    speaking: bool


RoomEvent = MemberJoined | MemberLeft | TrackPublished | TrackRemoved | SpeakingChanged


class RoomDirectory(ABC):
    """Changes apply at once in one process; a shared directory's changes may raise while it
    is unreachable (`RedisDirectory`: `RedisError`; its `set_speaking` logs and drops)."""

    @abstractmethod
    async def join(
        self, room: str, member_id: str, kind: MemberKind, display_name: str
    ) -> None: ...

    @abstractmethod
    async def leave(self, room: str, member_id: str) -> None: ...

    @abstractmethod
    async def publish(self, room: str, member_id: str, track: TrackInfo) -> None: ...

    @abstractmethod
    async def unpublish(self, room: str, member_id: str, track: TrackInfo) -> None: ...

    @abstractmethod
    async def set_speaking(
        self, room: str, member_id: str, track_name: str, speaking: bool
    ) -> None: ...

    @abstractmethod
    async def members(self, room: str) -> list[Member]: ...

    @abstractmethod
    async def rooms(self) -> list[str]: ...

    @abstractmethod
    def events(self, room: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[RoomEvent]]:
        """`async with directory.events(room) as stream: async for event in stream: ...`

        The contract every implementation keeps:
        - Events published after entering are delivered in order; take `members()` after
          entering to combine a snapshot with the changes that follow it.
        - The stream ending (the iterator finishing) means delivery to this subscriber
          stopped and events may have been missed: it fell too far behind, or a shared
          directory lost its connection. The subscriber re-enters `events()` and takes a
          fresh snapshot (`media/follower.py` does).
        - Entering may raise when the directory is unreachable; the caller retries.
        """


class InMemoryDirectory(RoomDirectory):
    """One process's directory; its single event loop serializes every change."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Member]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[RoomEvent | None]]] = {}

    def _broadcast(self, room: str, event: RoomEvent) -> None:
        for queue in list(self._subscribers.get(room, ())):
            if queue.qsize() >= EVENT_QUEUE_LIMIT:
                logger.warning("room event subscriber too slow, dropped room=%s", room)
                self._subscribers[room].discard(queue)
                queue.put_nowait(None)
                continue
            queue.put_nowait(event)

    async def join(self, room: str, member_id: str, kind: MemberKind, display_name: str) -> None:
        members = self._rooms.setdefault(room, {})
        if member_id in members:
            return
        member = Member(member_id, kind, display_name)
        members[member_id] = member
        logger.info("member joined room=%s member=%s kind=%s", room, member_id, kind.value)
        self._broadcast(room, MemberJoined(room, member))

    async def leave(self, room: str, member_id: str) -> None:
        members = self._rooms.get(room, {})
        member = members.pop(member_id, None)
        if member is None:
            return
        for track in member.tracks:
            self._broadcast(room, TrackRemoved(room, member_id, track))
        if not members:
            self._rooms.pop(room, None)
        logger.info("member left room=%s member=%s", room, member_id)
        self._broadcast(room, MemberLeft(room, member_id))

    def _member(self, room: str, member_id: str) -> Member:
        member = self._rooms.get(room, {}).get(member_id)
        if member is None:
            raise KeyError(f"{member_id} is not a member of room {room!r}")
        return member

    async def publish(self, room: str, member_id: str, track: TrackInfo) -> None:
        member = self._member(room, member_id)
        tracks = (*tuple(t for t in member.tracks if t.track_name != track.track_name), track)
        self._rooms[room][member_id] = replace(member, tracks=tracks)
        self._broadcast(room, TrackPublished(room, member_id, track))

    async def unpublish(self, room: str, member_id: str, track: TrackInfo) -> None:
        member = self._rooms.get(room, {}).get(member_id)
        if member is None or track not in member.tracks:
            return
        self._rooms[room][member_id] = replace(
            member,
            tracks=tuple(t for t in member.tracks if t != track),
            speaking=member.speaking - {track.track_name},
        )
        self._broadcast(room, TrackRemoved(room, member_id, track))

    async def set_speaking(
        self, room: str, member_id: str, track_name: str, speaking: bool
    ) -> None:
        member = self._rooms.get(room, {}).get(member_id)
        if member is None or (track_name in member.speaking) == speaking:
            return
        now = member.speaking | {track_name} if speaking else member.speaking - {track_name}
        self._rooms[room][member_id] = replace(member, speaking=now)
        self._broadcast(room, SpeakingChanged(room, member_id, track_name, speaking))

    async def members(self, room: str) -> list[Member]:
        return list(self._rooms.get(room, {}).values())

    async def rooms(self) -> list[str]:
        return sorted(self._rooms)

    @contextlib.asynccontextmanager
    async def events(self, room: str) -> AsyncIterator[AsyncIterator[RoomEvent]]:
        queue: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
        self._subscribers.setdefault(room, set()).add(queue)

        async def stream() -> AsyncIterator[RoomEvent]:
            while (event := await queue.get()) is not None:
                yield event

        try:
            yield stream()
        finally:
            subscribers = self._subscribers.get(room)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[room]
