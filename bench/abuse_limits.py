#!/usr/bin/env python3
"""Abuse limits, measured: an events-socket flood against the web API, and datachannel id
allocation in the SFU, ours (running next id) vs the old scan.

    .venv/bin/python bench/abuse_limits.py                 # 1,000 sockets, 12,000 ids
    .venv/bin/python bench/abuse_limits.py --sockets 3000 --channels 20000

- **socket flood**: the web API on 127.0.0.1 (local SFU behind it), one joined participant,
  `--sockets` WebSocket upgrades for it at once that never authenticate. Prints how many
  were upgraded and refused, the process's peak open file descriptors above the start
  (client and server ends both live in this process), the time until every upgraded socket
  was closed for no auth, and the log lines at WARNING and above.
- **datachannel ids**: `--channels` allocations with `ChannelIds` (O(1) each) vs the old
  per-allocation set of every taken id (O(n) each, O(n²) in all); the SFU now refuses more
  than 64 per request and 256 per session anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from aiohttp import ClientSession, WSServerHandshakeError, web

from bot.web import IceServerSource, Role, TokenSigner, WebApi
from bot.web import events as events_module
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory
from media.sfu import LocalSFU
from media.sfu.datachannels import ChannelIds

SECRET = "bench-abuse-limits-secret-" + "z" * 24


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def socket_flood(count: int) -> None:
    counter = _Counter()
    logging.getLogger().addHandler(counter)
    async with (
        LocalSFU() as sfu,
        RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as realtime,
    ):
        api = WebApi(
            directory=InMemoryDirectory(),
            realtime=realtime,
            signer=TokenSigner(SECRET),
            ice=IceServerSource.none(),
            public_url="http://127.0.0.1",
            room_exists=lambda room: asyncio.sleep(0, True),
        )
        app = web.Application()
        api.attach(app)
        await api.start()
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        api.public_url = base
        token, _ = api.signer.issue_invite("lobby", Role.SPEAKER, 600)
        async with ClientSession() as http:
            async with http.post(f"{base}/api/rooms/lobby/join", json={"token": token}) as r:
                pid = (await r.json())["participantId"]
            before = _fds()
            peak = before
            started = time.monotonic()

            async def one():
                nonlocal peak
                try:
                    socket = await http.ws_connect(
                        f"{base}/api/participants/{pid}/events", headers={"Origin": base}
                    )
                except WSServerHandshakeError as exc:
                    peak = max(peak, _fds())
                    return exc.status
                peak = max(peak, _fds())
                await socket.receive()  # closed for no auth
                await socket.close()
                return 101

            outcomes = await asyncio.gather(*(one() for _ in range(count)))
            elapsed = time.monotonic() - started
        await runner.cleanup()
        await api.stop()
    logging.getLogger().removeHandler(counter)
    upgraded = outcomes.count(101)
    print(
        f"socket flood: {count} opened at once, {upgraded} upgraded, "
        f"{count - upgraded} refused ({sorted(set(outcomes) - {101})}); peak fds +{peak - before}; "
        f"all done in {elapsed:.2f} s (auth timeout {events_module.AUTH_TIMEOUT_S} s); "
        f"log lines >= WARNING: {counter.count}"
    )


def channel_ids(count: int) -> None:
    ids = ChannelIds()
    taken: set[int] = set()
    started = time.perf_counter()
    for _ in range(count):
        taken.add(ids.allocate("server", taken.__contains__))
    ours = time.perf_counter() - started

    taken = set()
    started = time.perf_counter()
    for _ in range(count):
        scan = set(taken)  # the old allocator rebuilt the taken set for every id
        channel_id = 1
        while channel_id in scan:
            channel_id += 2
        taken.add(channel_id)
    old = time.perf_counter() - started
    print(
        f"datachannel ids: {count} allocations, running next id {ours * 1000:.1f} ms, "
        f"old scan {old * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=12_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(socket_flood(args.sockets))
    channel_ids(args.channels)


if __name__ == "__main__":
    main()
