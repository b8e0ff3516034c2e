"""Bridges following a room on a real redis-server, through the local SFU with real aiortc
peers: a Redis restart ends every event stream, the follower resyncs from a fresh snapshot,
and audio flows both ways with a member that joined after the restart, without a user action."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from media.realtime import RealtimeClient
from media.rooms_redis import RedisDirectory, RedisDirectoryConfig
from tests.integration.test_follower import bridge_in, speaking, until_heard

EXPIRY_S = 2.0


@pytest.fixture
async def client(sfu):
    async with RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as realtime:
        yield realtime


@pytest.fixture
async def two_processes(redis_server):
    prefix = f"f-{uuid.uuid4().hex[:8]}"
    directories = [
        RedisDirectory(redis_server.url, RedisDirectoryConfig(EXPIRY_S, key_prefix=prefix))
        for _ in range(2)
    ]
    for directory in directories:
        await directory.start()
    yield directories
    for directory in directories:
        await directory.stop()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_after_a_redis_restart_a_bridge_resyncs_and_hears_a_new_member(
    client, redis_server, two_processes, caplog
):
    caplog.set_level(logging.WARNING, logger="media.follower")
    one, two = two_processes
    async with (
        bridge_in("r", client, one, "listener") as listener,
        speaking(listener, "voice", 500),
    ):
        async with asyncio.timeout(10):
            while not any(m.tracks for m in await one.members("r")):
                await asyncio.sleep(0.05)
        resyncs = listener.follower.stats.resyncs
        await asyncio.to_thread(redis_server.restart)  # every key and subscription is lost
        async with asyncio.timeout(20):
            while listener.follower.stats.resyncs <= resyncs:
                await asyncio.sleep(0.05)
        assert any("room event stream ended" in r.getMessage() for r in caplog.records)
        # A member of another process joins after the restart: the listener hears it, and it
        # hears the listener, whose membership its owner wrote back into the empty Redis.
        async with bridge_in("r", client, two, "late") as late, speaking(late, "t", 700):
            await until_heard(listener, 700, 20)
            await until_heard(late, 500, 20)
