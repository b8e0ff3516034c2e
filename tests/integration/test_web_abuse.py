"""Abuse of the web API, on a real aiohttp server and the local SFU: floods of
unauthenticated event sockets stay bounded (sockets, file descriptors, log lines), sockets
closed before their first message are no error, and bodies no decoder can take are 400s.
None of it may leave an ERROR or a traceback in the log."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from bot.web import events as events_module
from bot.web import participants as participants_module
from tests.integration.test_web_api import (
    World,
    refusal,
    world,  # noqa: F401 (the fixture, shared)
)

pytestmark = pytest.mark.timeout(60)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_deeply_nested_json_is_a_400(
    world: World,  # noqa: F811
    caplog,
) -> None:
    for body in (b"[" * 90_000, b'{"a":' * 15_000, b"\xff\xfe{}"):
        response = await world.client.post(
            "/api/rooms/lobby/join", data=body, headers={"Content-Type": "application/json"}
        )
        refusal(response.status, await response.json(), 400, "bad_json")
    no_tracebacks(caplog)


async def test_a_flood_of_unauthenticated_sockets_is_bounded(
    world: World,  # noqa: F811
    monkeypatch,
    caplog,
) -> None:
    monkeypatch.setattr(events_module, "AUTH_TIMEOUT_S", 0.5)
    monkeypatch.setattr(events_module, "MAX_PENDING_SOCKETS", 6)
    joined = [await world.join(name=f"p{i}") for i in range(4)]
    fds_before = open_fds()
    caplog.clear()

    async def attempt(pid: str):
        try:
            return await world.client.ws_connect(
                f"/api/participants/{pid}/events", headers={"Origin": world.origin}
            )
        except WSServerHandshakeError as exc:
            return exc.status

    outcomes = await asyncio.gather(*(attempt(j.id) for j in joined for _ in range(50)))
    sockets = [o for o in outcomes if not isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, int)]
    assert len(sockets) <= events_module.MAX_PENDING_SOCKETS
    assert set(refused) <= {429, 503} and len(refused) == 200 - len(sockets)
    # Open sockets (and their client ends in this process) stay within the caps.
    assert open_fds() - fds_before <= 2 * events_module.MAX_PENDING_SOCKETS + 4
    for socket in sockets:  # none authenticates: each is closed for it, quickly
        message = await socket.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE and message.data == 4408
        await socket.close()
    assert len(caplog.records) <= 2 * len(outcomes), "the flood must not flood the log"
    no_tracebacks(caplog)
    # The participants are still served once the flood is over.
    socket = await world.events(joined[0])
    assert (await socket.receive_json(timeout=5))["type"] == "snapshot"
    await socket.close()


async def test_sockets_closed_before_their_first_message_are_no_error(
    world: World,  # noqa: F811
    caplog,
) -> None:
    ada = await world.join()
    for _ in range(5):
        socket = await world.client.ws_connect(
            f"/api/participants/{ada.id}/events", headers={"Origin": world.origin}
        )
        await socket.close()
    # The participant can still connect (the pending count came back down).
    socket = await world.events(ada)
    assert (await socket.receive_json(timeout=5))["type"] == "snapshot"
    await socket.close()
    no_tracebacks(caplog)


async def test_expiry_removes_participants_together(
    world: World,  # noqa: F811
    monkeypatch,
    caplog,
) -> None:
    """Each removal waits on outside calls (Realtime, TURN); one slow call must not hold
    every other expired participant in the room. The slow TURN API is injected: no real
    part here is slow on demand."""
    slow_s = 1.0
    monkeypatch.setattr(participants_module, "SOCKET_GRACE_S", 0.2)

    async def slow_revoke(usernames: list[str]) -> None:
        await asyncio.sleep(slow_s)

    monkeypatch.setattr(world.web.registry._ice, "revoke", slow_revoke)
    joined = [await world.join(name=f"p{i}") for i in range(5)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):
        while any(world.web.registry.find(j.id) for j in joined):
            await asyncio.sleep(0.02)
        while await world.directory.members("lobby"):
            await asyncio.sleep(0.02)
    # One after another would take 5 × slow_s; together it is about one.
    assert loop.time() - started < 3 * slow_s
    no_tracebacks(caplog)
