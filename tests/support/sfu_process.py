"""A standalone local SFU (`python -m media.sfu`) in a child process, and the faults a real
deployment sees: SIGTERM or SIGKILL and a restart on the same port, and a network blackout.

The blackout is real packet loss, not a mock: the SFU runs with its own group id, and an
iptables rule drops every packet that group sends (its UDP media, its STUN, its TCP
replies) until the blackout ends. That needs root and iptables (`scripts/ensure-iptables`);
`blackout_supported()` says whether this machine has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

__all__ = ["SfuProcess", "blackout_supported"]

BLACKOUT_GIDS = (20_000, 60_000)
"""The isolated SFU runs with a group id of its own from this range (its uid stays root, so
it can read the venv): the rule drops only its packets, even when two suites share a machine."""
APP_ID = "local"
REPO = Path(__file__).resolve().parents[2]


def blackout_supported() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("iptables") is not None
        and shutil.which("setpriv") is not None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SfuProcess:
    def __init__(self, port: int | None = None, *, isolated: bool = False) -> None:
        self.port = port or free_port()
        self.isolated = isolated
        self._process: asyncio.subprocess.Process | None = None
        self._gid = random.randrange(*BLACKOUT_GIDS)
        self._rule = ["OUTPUT", "-m", "owner", "--gid-owner", str(self._gid), "-j", "DROP"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    app_id = APP_ID

    @property
    def app_secret(self) -> str:
        from media.sfu.server import DEV_APP_SECRET

        return DEV_APP_SECRET

    async def start(self) -> None:
        command = [sys.executable, "-m", "media.sfu", "--port", str(self.port)]
        if self.isolated:
            command = ["setpriv", f"--regid={self._gid}", "--clear-groups", *command]
        env = {
            **os.environ,
            "SWITCHBOARD_CONFIG": "/nonexistent",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }
        env.pop("SWITCHBOARD_SFU_APP_SECRET", None)
        self._process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await self.wait_ready()

    async def wait_ready(self, within_s: float = 20.0) -> None:
        async with httpx.AsyncClient() as http, asyncio.timeout(within_s):
            while True:
                try:
                    response = await http.get(f"http://127.0.0.1:{self.port}/openapi.json")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self._process is not None and self._process.returncode is None, "SFU exited"
                await asyncio.sleep(0.05)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self, sig: signal.Signals) -> None:
        await self.stop(sig)
        await self.start()

    async def __aenter__(self) -> SfuProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def blackout(self) -> AsyncIterator[None]:
        """Every packet the SFU sends is dropped inside the block."""
        if not self.isolated:
            raise RuntimeError("a blackout needs SfuProcess(isolated=True)")
        await _iptables("-I", *self._rule)
        try:
            yield
        finally:
            await _iptables("-D", *self._rule)


async def _iptables(*args: str) -> None:
    process = await asyncio.create_subprocess_exec("iptables", *args)
    if await process.wait() != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed with status {process.returncode}")
