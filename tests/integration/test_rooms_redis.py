"""`RedisDirectory` across processes, on a real redis-server: shared members, atomic changes
from concurrent writers, a crashed process's members expiring (announced), versioned events,
and a Redis restart that ends every event stream and heals without a user action."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from media.rooms import (
    MemberJoined,
    MemberKind,
    MemberLeft,
    RoomEvent,
    TrackInfo,
    TrackPublished,
    TrackRemoved,
)
from media.rooms_redis import RedisDirectory, RedisDirectoryConfig

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
EXPIRY_S = 2.0
SCHEDULING_SLACK_S = 0.5
"""The sweep itself and a loaded machine's scheduling, on top of the expiry's bound."""

CRASHING_PROCESS = """
import asyncio, sys
from media.rooms import MemberKind, TrackInfo
from media.rooms_redis import RedisDirectory, RedisDirectoryConfig

async def main() -> None:
    url, prefix, expiry = sys.argv[1], sys.argv[2], float(sys.argv[3])
    directory = RedisDirectory(url, RedisDirectoryConfig(expiry, key_prefix=prefix))
    await directory.start()
    await directory.join("r", "doomed", MemberKind.DISCORD, "Doomed")
    await directory.publish("r", "doomed", TrackInfo("s-doomed", "voice", "Doomed"))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def processes(redis_server, prefix) -> AsyncIterator[Callable[[], RedisDirectory]]:
    """Directories on one Redis, as separate processes would have them (own owner ids)."""
    made: list[RedisDirectory] = []

    async def make() -> RedisDirectory:
        directory = RedisDirectory(
            redis_server.url, RedisDirectoryConfig(EXPIRY_S, key_prefix=prefix)
        )
        await directory.start()
        made.append(directory)
        return directory

    yield make
    for directory in made:
        await directory.stop()


async def take(
    stream: AsyncIterator[RoomEvent], count: int, within_s: float = 5.0
) -> list[RoomEvent]:
    async with asyncio.timeout(within_s):
        return [await anext(stream) for _ in range(count)]


async def test_two_processes_see_each_others_members_and_events(processes) -> None:
    one, two = await processes(), await processes()
    async with two.events("r") as stream:
        await one.join("r", "alice", MemberKind.DISCORD, "Alice")
        await one.publish("r", "alice", TrackInfo("s1", "voice", "Alice"))
        joined, published = await take(stream, 2)
    assert isinstance(published, TrackPublished)
    assert isinstance(joined, MemberJoined) and joined.member.member_id == "alice"
    [alice] = await two.members("r")
    assert alice.tracks == (TrackInfo("s1", "voice", "Alice"),)
    await two.join("r", "bob", MemberKind.WEB, "Bob")
    assert [m.member_id for m in await one.members("r")] == ["alice", "bob"]
    assert await one.rooms() == await two.rooms() == ["r"]


async def test_concurrent_writers_lose_no_change(processes) -> None:
    one, two = await processes(), await processes()
    await one.join("r", "shared", MemberKind.OTHER, "shared")
    tracks = [TrackInfo("s", f"t{i}") for i in range(40)]
    await asyncio.gather(
        *((one if i % 2 else two).publish("r", "shared", track) for i, track in enumerate(tracks))
    )
    [member] = await one.members("r")
    assert sorted(t.track_name for t in member.tracks) == sorted(t.track_name for t in tracks)


async def test_a_crashed_process_members_expire_announced(processes, redis_server, prefix) -> None:
    watcher = await processes()
    crashing = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_PROCESS, redis_server.url, prefix, str(EXPIRY_S),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            assert (await crashing.stdout.readline()).strip() == b"ready"
        async with watcher.events("r") as stream:
            [doomed] = await watcher.members("r")
            assert doomed.member_id == "doomed" and len(doomed.tracks) == 1
            crashing.kill()  # SIGKILL: no leave, no clean-up, the refresher just stops
            killed_at = time.monotonic()
            removed, left = await take(stream, 2, within_s=EXPIRY_S * 3)
            gone_after = time.monotonic() - killed_at
    finally:
        with contextlib.suppress(ProcessLookupError):
            crashing.kill()
        await crashing.wait()
    assert isinstance(removed, TrackRemoved) and removed.track.session_id == "s-doomed"
    assert isinstance(left, MemberLeft) and left.member_id == "doomed"
    assert gone_after <= EXPIRY_S + SCHEDULING_SLACK_S, gone_after
    assert await watcher.members("r") == [] and await watcher.rooms() == []


async def test_a_live_process_members_never_expire(processes) -> None:
    one, two = await processes(), await processes()
    await one.join("r", "kept", MemberKind.WEB, "kept")
    await asyncio.sleep(EXPIRY_S * 1.5)  # several refreshes and sweeps go by
    assert await two.sweep() == 0
    assert [m.member_id for m in await two.members("r")] == ["kept"]


async def test_events_of_another_version_or_type_are_skipped(
    processes, redis_server, prefix
) -> None:
    directory = await processes()
    async with directory.events("r") as stream, Redis.from_url(redis_server.url) as raw:
        channel = f"{prefix}:room:r:events"
        await raw.publish(channel, json.dumps({"v": 2, "type": "member_left", "room": "r"}))
        await raw.publish(channel, json.dumps({"v": 1, "type": "member_teleported"}))
        await raw.publish(channel, "not json")
        await directory.join("r", "alice", MemberKind.WEB, "Alice")
        [event] = await take(stream, 1)
    assert isinstance(event, MemberJoined) and event.member.member_id == "alice"


async def test_a_redis_restart_ends_the_stream_and_the_owner_restores_its_members(
    processes, redis_server
) -> None:
    one, two = await processes(), await processes()
    await one.join("r", "alice", MemberKind.DISCORD, "Alice")
    await one.publish("r", "alice", TrackInfo("s1", "voice", "Alice"))
    async with two.events("r") as stream:
        await asyncio.to_thread(redis_server.restart)  # no persistence: every key is lost
        async with asyncio.timeout(10):
            async for _ in stream:
                pass  # the stream ends: events may have been missed
    async with asyncio.timeout(10):
        while not await two.members("r"):
            await asyncio.sleep(0.05)
    [alice] = await two.members("r")
    assert alice.tracks == (TrackInfo("s1", "voice", "Alice"),)


async def test_while_redis_is_down_changes_fail_but_speaking_is_dropped(
    processes, redis_server
) -> None:
    directory = await processes()
    await directory.join("r", "alice", MemberKind.WEB, "Alice")
    await directory.publish("r", "alice", TrackInfo("s1", "voice"))
    await asyncio.to_thread(redis_server.stop)
    try:
        await directory.set_speaking("r", "alice", "voice", True)  # logged, not raised
        with pytest.raises(RedisError):
            await directory.publish("r", "alice", TrackInfo("s1", "other"))
    finally:
        await asyncio.to_thread(redis_server.start)
    await directory.set_speaking("r", "alice", "voice", True)
    async with asyncio.timeout(10):  # the owner writes alice back into the empty Redis
        while not await directory.members("r"):
            await asyncio.sleep(0.05)
    [alice] = await directory.members("r")
    assert alice.tracks == (TrackInfo("s1", "voice"),)


async def test_a_redis_that_stops_answering_ends_the_stream_an_idle_one_does_not(
    redis_server, prefix
) -> None:
    keepalive_s = 0.3
    config = RedisDirectoryConfig(EXPIRY_S, key_prefix=prefix, keepalive_s=keepalive_s)
    directory = RedisDirectory(redis_server.url, config)
    await directory.start()
    try:
        async with directory.events("r") as stream:
            # Idle for several keepalives: PINGs are answered, nothing ends.
            idle = asyncio.create_task(anext(stream))
            await asyncio.sleep(keepalive_s * 5)
            assert not idle.done()
            redis_server.pause()
            try:
                paused_at = time.monotonic()
                with pytest.raises(StopAsyncIteration):
                    async with asyncio.timeout(keepalive_s * 10):
                        await idle
                ended_after = time.monotonic() - paused_at
            finally:
                redis_server.resume()
        assert ended_after <= keepalive_s * 2 + SCHEDULING_SLACK_S, ended_after
    finally:
        await directory.stop()
