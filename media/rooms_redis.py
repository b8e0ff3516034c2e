"""`RedisDirectory`: the room directory shared by every process through one Redis.

Keys (under a prefix, `switchboard` by default):

- `{p}:room:{room}:members`, a hash: member id -> the member's JSON (`room_codec`), which
  names its **owner**, the process that keeps it alive;
- `{p}:rooms`, a set: the rooms that have members;
- `{p}:owner:{owner}`, a string with an expiry: the owner is alive while it exists. The owner
  refreshes it; a process that crashes stops refreshing, and the key expires;
- `{p}:room:{room}:events`, a pub/sub channel: the room's events, in commit order.

Every change reads the member under WATCH and writes the hash, the rooms set and the events in
one MULTI, so two processes changing one room cannot interleave, and an event is published
exactly when its change is committed.

A crashed process's members are removed by whoever notices first: every live directory sweeps
all rooms every third of the expiry, and removes (WATCHing the owner's key, so that an owner
that comes back in the meantime wins) each member whose owner's key is gone, announcing
`TrackRemoved` for its tracks and `MemberLeft`. The owner's key lives two thirds of the
expiry, so a crashed process's members are gone within `member_expiry_s`.

The owner also keeps what it owns in memory. If its key is found missing when refreshing
(Redis restarted without persistence, or this process stalled past the expiry and was swept),
it writes its members back and announces them, so a Redis restart heals without user action.

Pub/sub loses what is published while a subscriber is disconnected. The subscription
therefore never reconnects by itself: when its connection fails, or Redis stops answering a
PING, the event stream ends, and the follower re-enters with a fresh snapshot (the contract in
`RoomDirectory.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError, WatchError

from .room_codec import OwnedMember, decode_event, decode_member, encode_event, encode_member
from .rooms import (
    Member,
    MemberJoined,
    MemberKind,
    MemberLeft,
    RoomDirectory,
    RoomEvent,
    SpeakingChanged,
    TrackInfo,
    TrackPublished,
    TrackRemoved,
)

__all__ = ["RedisDirectory", "RedisDirectoryConfig"]

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
"""Bounds every command, so a Redis that vanished without closing the socket fails fast."""
COMMAND_RETRIES = 3
"""Reconnects for one command (not for a subscription: its stream ends instead)."""


@dataclass(frozen=True, slots=True)
class RedisDirectoryConfig:
    member_expiry_s: float = 10.0
    """A crashed process's members are removed (and announced) within this."""
    key_prefix: str = "switchboard"
    keepalive_s: float = 5.0
    """An event subscription idle this long PINGs Redis; no answer within as long ends it."""

    @property
    def owner_ttl_ms(self) -> int:
        return max(1, int(self.member_expiry_s * 2 / 3 * 1000))

    @property
    def refresh_s(self) -> float:
        return self.member_expiry_s / 6

    @property
    def sweep_s(self) -> float:
        return self.member_expiry_s / 3


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _removal(room: str, member: Member) -> list[RoomEvent]:
    removed: list[RoomEvent] = [TrackRemoved(room, member.member_id, t) for t in member.tracks]
    return [*removed, MemberLeft(room, member.member_id)]


def _arrival(room: str, member: Member) -> list[RoomEvent]:
    events: list[RoomEvent] = [MemberJoined(room, member)]
    events += [TrackPublished(room, member.member_id, t) for t in member.tracks]
    events += [SpeakingChanged(room, member.member_id, n, True) for n in sorted(member.speaking)]
    return events


class RedisDirectory(RoomDirectory):
    """`start()` before use (announces this process alive), `stop()` to leave and close."""

    def __init__(
        self,
        url: str,
        config: RedisDirectoryConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.config = config or RedisDirectoryConfig()
        self.owner = owner or _default_owner()
        self._redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            # A pooled connection that Redis closed (a restart) is replaced, not an error.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), COMMAND_RETRIES),
        )
        # Subscriptions get no automatic reconnect: redis-py would resubscribe silently and
        # hide the events lost meanwhile; a failure must end the stream instead.
        self._subscriber = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._owned: dict[tuple[str, str], Member] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- keys --------------------------------------------------------------------------------

    def _members_key(self, room: str) -> str:
        return f"{self.config.key_prefix}:room:{room}:members"

    def _channel(self, room: str) -> str:
        return f"{self.config.key_prefix}:room:{room}:events"

    def _rooms_key(self) -> str:
        return f"{self.config.key_prefix}:rooms"

    def _owner_key(self, owner: str) -> str:
        return f"{self.config.key_prefix}:owner:{owner}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this process alive (raises if Redis is unreachable), then keep it so."""
        await self._redis.set(self._owner_key(self.owner), "1", px=self.config.owner_ttl_ms)
        self._tasks = [
            asyncio.create_task(self._refresh_forever(), name="directory-refresh"),
            asyncio.create_task(self._sweep_forever(), name="directory-sweep"),
        ]
        logger.info(
            "redis directory started owner=%s member_expiry_s=%s",
            self.owner,
            self.config.member_expiry_s,
        )

    async def stop(self) -> None:
        """Leave what this process still owns (announced), then close the connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            for room, member_id in list(self._owned):
                await self.leave(room, member_id)
            await self._redis.delete(self._owner_key(self.owner))
        except RedisError as exc:
            # Whatever is left expires within member_expiry_s; another process announces it.
            logger.warning("redis directory stop incomplete owner=%s error=%s", self.owner, exc)
        await self._redis.aclose()
        await self._subscriber.aclose()

    # -- changes -----------------------------------------------------------------------------

    async def _atomically(self, room: str, body: Callable[[Pipeline], Awaitable[None]]) -> None:
        """Run `body` (reads, then `multi()` and writes) until no watched key changed."""
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._members_key(room))
                    await body(pipe)
                    return
                except WatchError:
                    continue
                finally:
                    await pipe.reset()

    async def _read(self, pipe: Pipeline, room: str, member_id: str) -> OwnedMember | None:
        raw = await pipe.hget(self._members_key(room), member_id)
        return None if raw is None else decode_member(raw)

    async def _commit(
        self,
        pipe: Pipeline,
        room: str,
        member_id: str,
        after: OwnedMember | None,
        events: list[RoomEvent],
    ) -> None:
        """Write `after` (None: remove the member) and publish `events`, in one MULTI."""
        members_key = self._members_key(room)
        emptied = after is None and await pipe.hlen(members_key) <= 1
        pipe.multi()
        if after is None:
            pipe.hdel(members_key, member_id)
            if emptied:
                pipe.srem(self._rooms_key(), room)
        else:
            pipe.hset(members_key, member_id, encode_member(after))
            pipe.sadd(self._rooms_key(), room)
        for event in events:
            pipe.publish(self._channel(room), encode_event(event))
        await pipe.execute()
        if after is not None and after.owner == self.owner:
            self._owned[(room, member_id)] = after.member
        else:
            self._owned.pop((room, member_id), None)

    async def _alive(self, pipe: Pipeline, owner: str) -> bool:
        """Whether `owner` is alive, watching its key: an owner that comes back wins."""
        if owner == self.owner:
            return True
        await pipe.watch(self._owner_key(owner))
        return bool(await pipe.exists(self._owner_key(owner)))

    async def join(self, room: str, member_id: str, kind: MemberKind, display_name: str) -> None:
        async def body(pipe: Pipeline) -> None:
            current = await self._read(pipe, room, member_id)
            if current is not None and await self._alive(pipe, current.owner):
                return
            # A member whose owner died is replaced, announcing that it left first.
            events = _removal(room, current.member) if current is not None else []
            member = Member(member_id, kind, display_name)
            events.append(MemberJoined(room, member))
            await self._commit(pipe, room, member_id, OwnedMember(member, self.owner), events)
            logger.info("member joined room=%s member=%s kind=%s", room, member_id, kind.value)

        await self._atomically(room, body)

    async def leave(self, room: str, member_id: str) -> None:
        async def body(pipe: Pipeline) -> None:
            current = await self._read(pipe, room, member_id)
            if current is None:
                self._owned.pop((room, member_id), None)
                return
            await self._commit(pipe, room, member_id, None, _removal(room, current.member))
            logger.info("member left room=%s member=%s", room, member_id)

        await self._atomically(room, body)

    async def _change(
        self,
        room: str,
        member_id: str,
        change: Callable[[Member], tuple[Member, RoomEvent] | None],
        *,
        required: bool,
    ) -> None:
        async def body(pipe: Pipeline) -> None:
            current = await self._read(pipe, room, member_id)
            if current is None:
                if required:
                    raise KeyError(f"{member_id} is not a member of room {room!r}")
                return
            changed = change(current.member)
            if changed is None:
                return
            member, event = changed
            await self._commit(pipe, room, member_id, replace(current, member=member), [event])

        await self._atomically(room, body)

    async def publish(self, room: str, member_id: str, track: TrackInfo) -> None:
        def change(member: Member) -> tuple[Member, RoomEvent]:
            kept = tuple(t for t in member.tracks if t.track_name != track.track_name)
            return replace(member, tracks=(*kept, track)), TrackPublished(room, member_id, track)

        await self._change(room, member_id, change, required=True)

    async def unpublish(self, room: str, member_id: str, track: TrackInfo) -> None:
        def change(member: Member) -> tuple[Member, RoomEvent] | None:
            if track not in member.tracks:
                return None
            after = replace(
                member,
                tracks=tuple(t for t in member.tracks if t != track),
                speaking=member.speaking - {track.track_name},
            )
            return after, TrackRemoved(room, member_id, track)

        await self._change(room, member_id, change, required=False)

    async def set_speaking(
        self, room: str, member_id: str, track_name: str, speaking: bool
    ) -> None:
        """Best effort: speaking state is a display hint that the next change corrects, and a
        bridge sets it from its tick loop, which an unreachable Redis must not stop."""
        try:
            await self._set_speaking(room, member_id, track_name, speaking)
        except RedisError as exc:
            logger.warning(
                "speaking state not shared room=%s member=%s error=%s", room, member_id, exc
            )

    async def _set_speaking(
        self, room: str, member_id: str, track_name: str, speaking: bool
    ) -> None:
        def change(member: Member) -> tuple[Member, RoomEvent] | None:
            if (track_name in member.speaking) == speaking:
                return None
            now = member.speaking | {track_name} if speaking else member.speaking - {track_name}
            after = replace(member, speaking=now)
            return after, SpeakingChanged(room, member_id, track_name, speaking)

        await self._change(room, member_id, change, required=False)

    # -- reads -------------------------------------------------------------------------------

    async def members(self, room: str) -> list[Member]:
        raw = await self._redis.hgetall(self._members_key(room))
        owned = (decode_member(text) for text in raw.values())
        found = [o.member for o in owned if o is not None]
        return sorted(found, key=lambda m: (m.joined_at, m.member_id))

    async def rooms(self) -> list[str]:
        return sorted(_text(room) for room in await self._redis.smembers(self._rooms_key()))

    # -- events ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def events(self, room: str) -> AsyncIterator[AsyncIterator[RoomEvent]]:
        pubsub = self._subscriber.pubsub()
        try:
            await pubsub.subscribe(self._channel(room))
            # Events count from the subscription's confirmation, not from sending SUBSCRIBE.
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                while True:
                    message = await pubsub.get_message(timeout=COMMAND_TIMEOUT_S)
                    if message is not None and message["type"] == "subscribe":
                        break
            yield self._stream(pubsub, room)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _stream(self, pubsub: PubSub, room: str) -> AsyncIterator[RoomEvent]:
        awaiting_pong = False
        while True:
            try:
                message = await pubsub.get_message(timeout=self.config.keepalive_s)
                if message is None:
                    if awaiting_pong:
                        logger.warning("redis stopped answering, room events end room=%s", room)
                        return
                    await pubsub.ping()
                    awaiting_pong = True
                    continue
            except (RedisError, OSError) as exc:
                logger.warning("room event subscription lost room=%s error=%s", room, exc)
                return
            awaiting_pong = False
            if message["type"] != "message":
                continue
            event = decode_event(message["data"])
            if event is not None:
                yield event

    # -- keeping members alive, and noticing those nobody keeps ------------------------------

    async def _refresh_forever(self) -> None:
        key = self._owner_key(self.owner)
        restore_pending = False  # until a restore completes: it may fail halfway
        while True:
            await asyncio.sleep(self.config.refresh_s)
            try:
                if await self._redis.set(key, "1", px=self.config.owner_ttl_ms, xx=True):
                    if not restore_pending:
                        continue
                else:
                    await self._redis.set(key, "1", px=self.config.owner_ttl_ms)
                    restore_pending = True
                    logger.warning(
                        "directory owner entry was gone, restoring members owner=%s members=%d",
                        self.owner,
                        len(self._owned),
                    )
                await self._restore()
                restore_pending = False
            except RedisError as exc:
                logger.warning("directory refresh failed owner=%s error=%s", self.owner, exc)

    async def _restore(self) -> None:
        """Write back (and announce) every member this process owns that Redis lost."""
        for (room, member_id), member in list(self._owned.items()):

            async def body(pipe: Pipeline, room: str = room, member: Member = member) -> None:
                current = await self._read(pipe, room, member.member_id)
                mine = OwnedMember(member, self.owner)
                if current == mine:
                    return
                if current is not None and await self._alive(pipe, current.owner):
                    # Another live process took this member id over: it is theirs now.
                    self._owned.pop((room, member.member_id), None)
                    return
                events = _removal(room, current.member) if current is not None else []
                await self._commit(
                    pipe, room, member.member_id, mine, events + _arrival(room, member)
                )

            await self._atomically(room, body)
            logger.info("member restored room=%s member=%s", room, member_id)

    async def _sweep_forever(self) -> None:
        while True:
            # Jitter spreads the processes' sweeps over the interval.
            await asyncio.sleep(self.config.sweep_s * random.uniform(0.8, 1.0))
            try:
                await self.sweep()
            except RedisError as exc:
                logger.warning("directory sweep failed owner=%s error=%s", self.owner, exc)

    async def sweep(self) -> int:
        """Remove and announce the members whose owner is gone; how many were removed."""
        removed = 0
        for key in await self._redis.smembers(self._rooms_key()):
            room = _text(key)
            raw = await self._redis.hgetall(self._members_key(room))
            by_owner: dict[str, list[str]] = {}
            for member_id, text in raw.items():
                owned = decode_member(text)
                if owned is not None and owned.owner != self.owner:
                    by_owner.setdefault(owned.owner, []).append(_text(member_id))
            for owner, member_ids in by_owner.items():
                if await self._redis.exists(self._owner_key(owner)):
                    continue
                for member_id in member_ids:
                    removed += await self._expire(room, member_id, owner)
        return removed

    async def _expire(self, room: str, member_id: str, owner: str) -> int:
        expired = 0

        async def body(pipe: Pipeline) -> None:
            nonlocal expired
            current = await self._read(pipe, room, member_id)
            if current is None or current.owner != owner:
                return
            if await self._alive(pipe, owner):
                return  # the owner came back since the sweep looked
            await self._commit(pipe, room, member_id, None, _removal(room, current.member))
            expired = 1
            logger.info("member expired room=%s member=%s owner=%s", room, member_id, owner)

        await self._atomically(room, body)
        return expired


def _text(value: bytes | str) -> str:
    """The client decodes responses; its type hints still allow bytes."""
    return value.decode() if isinstance(value, bytes) else value
