"""The room directory contract, against `InMemoryDirectory` and `RedisDirectory` (a real
redis-server) alike: the same changes give the same events, in order, and the same snapshot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from media.rooms import (
    InMemoryDirectory,
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
from media.rooms_redis import RedisDirectory, RedisDirectoryConfig

pytestmark = pytest.mark.timeout(30)

MIC = TrackInfo("session-a", "mic", "Alice", "1001")
CAM = TrackInfo("session-a", "cam", "Alice", "1001")


@pytest.fixture(params=["memory", "redis"])
async def directory(request) -> AsyncIterator[RoomDirectory]:
    if request.param == "memory":
        yield InMemoryDirectory()
        return
    server = request.getfixturevalue("redis_server")
    config = RedisDirectoryConfig(key_prefix=f"contract-{uuid.uuid4().hex[:8]}")
    redis_directory = RedisDirectory(server.url, config)
    await redis_directory.start()
    try:
        yield redis_directory
    finally:
        await redis_directory.stop()


async def take(
    stream: AsyncIterator[RoomEvent], count: int, within_s: float = 5.0
) -> list[RoomEvent]:
    async with asyncio.timeout(within_s):
        return [await anext(stream) for _ in range(count)]


def shape(event: RoomEvent) -> tuple:
    """An event without the join time (stamped by whichever process created the member)."""
    if isinstance(event, MemberJoined):
        m = event.member
        return ("joined", event.room, m.member_id, m.kind, m.display_name, m.tracks, m.speaking)
    return (type(event).__name__, *(getattr(event, f) for f in event.__slots__))


async def test_changes_arrive_in_order(directory: RoomDirectory) -> None:
    async with directory.events("r") as stream:
        await directory.join("r", "alice", MemberKind.WEB, "Alice")
        await directory.publish("r", "alice", MIC)
        await directory.set_speaking("r", "alice", "mic", True)
        await directory.set_speaking("r", "alice", "mic", True)  # no change: no event
        await directory.publish("r", "alice", CAM)
        await directory.set_speaking("r", "alice", "mic", False)
        await directory.unpublish("r", "alice", CAM)
        await directory.set_speaking("r", "alice", "mic", True)
        await directory.leave("r", "alice")
        events = await take(stream, 9)
    assert [shape(e) for e in events] == [
        ("joined", "r", "alice", MemberKind.WEB, "Alice", (), frozenset()),
        shape(TrackPublished("r", "alice", MIC)),
        shape(SpeakingChanged("r", "alice", "mic", True)),
        shape(TrackPublished("r", "alice", CAM)),
        shape(SpeakingChanged("r", "alice", "mic", False)),
        shape(TrackRemoved("r", "alice", CAM)),
        shape(SpeakingChanged("r", "alice", "mic", True)),
        shape(TrackRemoved("r", "alice", MIC)),  # leaving removes what is still published
        shape(MemberLeft("r", "alice")),
    ]


async def test_snapshot_then_the_changes_that_follow(directory: RoomDirectory) -> None:
    await directory.join("r", "alice", MemberKind.DISCORD, "Alice")
    await directory.publish("r", "alice", MIC)
    await directory.set_speaking("r", "alice", "mic", True)
    async with directory.events("r") as stream:
        [alice] = await directory.members("r")
        assert (alice.member_id, alice.kind, alice.display_name) == (
            "alice",
            MemberKind.DISCORD,
            "Alice",
        )
        assert alice.tracks == (MIC,) and alice.speaking == {"mic"}
        await directory.join("r", "bob", MemberKind.WEB, "Bob")
        [event] = await take(stream, 1)
    assert isinstance(event, MemberJoined) and event.member.member_id == "bob"
    assert [m.member_id for m in await directory.members("r")] == ["alice", "bob"]


async def test_rooms_list_rooms_with_members_only(directory: RoomDirectory) -> None:
    await directory.join("a", "x", MemberKind.OTHER, "x")
    await directory.join("b", "y", MemberKind.OTHER, "y")
    assert await directory.rooms() == ["a", "b"]
    await directory.leave("a", "x")
    assert await directory.rooms() == ["b"]
    assert await directory.members("a") == []


async def test_repeats_and_strangers_change_nothing(directory: RoomDirectory) -> None:
    async with directory.events("r") as stream:
        await directory.join("r", "alice", MemberKind.WEB, "Alice")
        await directory.join("r", "alice", MemberKind.WEB, "Alice again")
        await directory.leave("r", "nobody")
        await directory.unpublish("r", "alice", MIC)
        await directory.set_speaking("r", "nobody", "mic", True)
        with pytest.raises(KeyError, match="nobody"):
            await directory.publish("r", "nobody", MIC)
        await directory.leave("r", "alice")
        events = await take(stream, 2)
    assert [type(e) for e in events] == [MemberJoined, MemberLeft]
    assert events[0].member.display_name == "Alice"


async def test_events_are_per_room(directory: RoomDirectory) -> None:
    async with directory.events("r") as stream:
        await directory.join("other", "x", MemberKind.OTHER, "x")
        await directory.join("r", "y", MemberKind.OTHER, "y")
        [event] = await take(stream, 1)
    assert event.room == "r" and event.member.member_id == "y"
