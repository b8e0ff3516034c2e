"""`python -m bot` as an operator meets it: --help and --version, a PaaS's $PORT, one clear
line (and a non-zero exit) for each failure they can fix, a second signal while stopping,
JSON logs without library noise, the invite command, and /metrics of a running service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[2]
SECRET = "operator-test-invite-secret-" + "z" * 20
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The process environment without the caller's Switchboard settings, plus `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWITCHBOARD_", "DISCORD_", "REALTIME_", "TURN_")) and k != "PORT"
    }
    env["PYTHONPATH"] = str(ROOT)
    env["SWITCHBOARD_SFU_PORT"] = "0"
    env["SWITCHBOARD_STORE_PATH"] = str(tmp_path / "store.sqlite3")
    env.update(settings)
    return env


class Running:
    """`python -m bot` in a process of its own; stderr is read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.notify_all()

    async def line_with(self, text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                if self._reader.done():
                    raise AssertionError(f"exited without {text!r}: {self.stderr}")
                await self._changed.wait()

    async def finish(self, timeout_s: float = 15.0) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await self._reader
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def bot(tmp_path: Path, *args: str, **settings: str) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=environment(tmp_path, **settings),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def failed_start(tmp_path: Path, **settings: str) -> tuple[int, str]:
    """Exit status and stderr of a start that must fail by itself."""
    async with bot(tmp_path, **settings) as running:
        return await running.finish(START_TIMEOUT_S), running.stderr


def one_error_line(stderr: str) -> str:
    """The one line that says what is wrong: last, alone, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("switchboard: ")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr
    return errors[0]


async def wait_live(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http, asyncio.timeout(START_TIMEOUT_S):
        while True:
            try:
                return await http.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)


# -- help, version ---------------------------------------------------------------------------------


async def test_help_and_version_answer_without_starting_the_service(tmp_path: Path) -> None:
    switchboard = Path(sys.executable).parent / "switchboard"  # the console script
    for command in (
        [sys.executable, "-m", "bot", "--help"],
        [sys.executable, "-m", "bot", "--version"],
        [sys.executable, "-m", "bot", "invite", "--help"],
        [str(switchboard), "--version"],
    ):
        process = await asyncio.create_subprocess_exec(
            *command,
            env=environment(tmp_path),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr
        assert stderr == b"", stderr  # nothing was started, so nothing logged
        text = stdout.decode()
        if command[-1] == "--version":
            assert text.strip() == "switchboard 0.1.0"
        else:
            assert text.startswith("usage: switchboard"), text
    assert not (tmp_path / "store.sqlite3").exists()


# -- a PaaS process --------------------------------------------------------------------------------


async def test_platform_port_serves_live_on_every_interface(tmp_path: Path) -> None:
    port = free_port()
    async with bot(tmp_path, PORT=str(port), SWITCHBOARD_INVITE_SECRET=SECRET) as running:
        assert (await wait_live(f"http://127.0.0.1:{port}/live")).json() == {"live": True}
        # Bound to 0.0.0.0, not 127.0.0.1: another address answers too (all of 127/8 is
        # this machine's loopback; nothing leaves it).
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.2:{port}/live")).status_code == 200
        assert f"http listening url=http://0.0.0.0:{port}" in await running.line_with(
            "http listening"
        )
        # The links would still start with the default loopback public_url: said at start.
        warning = await running.line_with("SWITCHBOARD_HTTP_PUBLIC_URL")
        assert "is a loopback address while HTTP listens on 0.0.0.0" in warning
        running.process.send_signal(signal.SIGTERM)
        assert await running.finish() == 0, running.stderr


async def test_public_address_without_an_invite_secret_refuses_to_start(tmp_path: Path) -> None:
    code, stderr = await failed_start(tmp_path, PORT=str(free_port()))
    assert code == 2
    line = one_error_line(stderr)
    assert "environment variable PORT: http.invite_secret: missing" in line
    assert "set SWITCHBOARD_INVITE_SECRET" in line
    assert len(stderr.splitlines()) == 1


# -- failures an operator can fix: one line, non-zero ----------------------------------------------


async def test_a_busy_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, stderr = await failed_start(tmp_path, SWITCHBOARD_HTTP_PORT=str(port))
    assert code == 1
    line = one_error_line(stderr)
    assert line == (
        f"switchboard: cannot listen on 127.0.0.1:{port} (http.port, env SWITCHBOARD_HTTP_PORT "
        "or PORT): the port is already in use by another process"
    )
    assert "service stopped" in stderr  # what had started was stopped again


async def test_a_short_invite_secret_is_a_config_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    code, stderr = await failed_start(tmp_path, SWITCHBOARD_INVITE_SECRET="too-short-secret")
    assert code == 2
    line = one_error_line(stderr)
    assert len(stderr.splitlines()) == 1  # refused before anything started
    assert "environment variable SWITCHBOARD_INVITE_SECRET" in line
    assert "expected at least 32 bytes" in line
    assert "too-short-secret" not in stderr


def damaged(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "mappings.sqlite3"
    path.write_bytes(b"this is not an SQLite database, whatever its name says\n" * 40)
    return path, "not an SQLite database (wrong path, or the file was overwritten)"


def directory(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "mappings.sqlite3"
    path.mkdir()
    return path, "check that it is a file, not a directory"


def under_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "var").write_text("a file where a directory should be")
    return tmp_path / "var" / "mappings.sqlite3", "a parent of the path is a file, not a directory"


@pytest.mark.parametrize("store", [damaged, directory, under_a_file])
async def test_an_unusable_store_names_the_path_and_the_likely_cause(tmp_path: Path, store) -> None:
    path, cause = store(tmp_path)
    code, stderr = await failed_start(tmp_path, SWITCHBOARD_STORE_PATH=str(path))
    assert code == 1
    line = one_error_line(stderr)
    assert line.startswith(f"switchboard: mapping store {path} (store.path"), line
    assert cause in line, line


# -- shutdown --------------------------------------------------------------------------------------


async def test_a_second_signal_while_stopping_is_logged_and_ignored(tmp_path: Path) -> None:
    port = free_port()
    async with bot(tmp_path, SWITCHBOARD_HTTP_PORT=str(port)) as running:
        await wait_live(f"http://127.0.0.1:{port}/live")
        # A request still in flight holds the HTTP server's shutdown for its grace period
        # (bot.http.REQUEST_GRACE_S), so the second signal lands while stopping.
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/rooms/lobby/join HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        running.process.send_signal(signal.SIGTERM)
        await running.line_with("signal received signal=SIGTERM: shutting down")
        running.process.send_signal(signal.SIGINT)
        ignored = await running.line_with("signal received again", timeout_s=10)
        assert "signal=SIGINT: ignored, shutdown continues" in ignored
        assert await running.finish() == 0, running.stderr
        writer.close()
    lines = running.lines
    assert "Traceback" not in running.stderr
    stopped = next(i for i, line in enumerate(lines) if "service stopped" in line)
    assert stopped > lines.index(ignored)  # cleanup finished after the ignored signal
    assert any("local sfu stopped" in line for line in lines[: stopped + 1])


# -- logs, the invite command, /metrics ------------------------------------------------------------


async def test_json_logs_an_operator_invite_and_metrics_of_a_running_service(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "switchboard.toml"
    config.write_text(f'[http]\npublic_url = "http://127.0.0.1:{port}"\n')
    settings = {
        "SWITCHBOARD_CONFIG": str(config),
        "SWITCHBOARD_HTTP_PORT": str(port),
        "SWITCHBOARD_INVITE_SECRET": SECRET,
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    async with bot(tmp_path, **settings) as running:
        await wait_live(f"http://127.0.0.1:{port}/live")
        invite = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "invite",
            "garden",
            "--role",
            "listener",
            "--expires",
            "90m",
            env=environment(tmp_path, **settings),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(invite.communicate(), 30)
        assert invite.returncode == 0, stderr
        assert "listener invite to room garden, valid until" in stderr.decode()
        link = stdout.decode().strip()
        assert link.startswith(f"http://127.0.0.1:{port}/r/garden#t=")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            page = await http.get(link.split("#")[0])
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            # "garden" is linked to no voice channel: the operator's link opens it anyway.
            token = link.split("#t=", 1)[1]
            joined = await http.post("/api/rooms/garden/join", json={"token": token, "name": "Op"})
            assert joined.status_code == 200, joined.text
            assert joined.json()["role"] == "listener"
            metrics = (await http.get("/metrics")).text
        samples = dict(
            line.rsplit(" ", 1) for line in metrics.splitlines() if line and line[0] != "#"
        )
        assert float(samples["switchboard_web_participants"]) == 1
        assert float(samples["switchboard_rooms"]) == 1
        assert float(samples["process_open_fds"]) > 0
        assert float(samples["process_resident_memory_bytes"]) > 10e6
        assert float(samples["process_cpu_seconds_total"]) > 0
        running.process.send_signal(signal.SIGTERM)
        assert await running.finish() == 0, running.stderr
    records = [json.loads(line) for line in running.lines if line.strip()]  # every line is JSON
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    messages = [r["message"] for r in records]
    assert f"config loaded path={config}" in messages
    assert any(m.startswith("participant joined") and "room=garden" in m for m in messages)
    assert any("No Discord bot token" in m for m in messages)  # multi-line, still one record
    # The Realtime client made HTTP requests (httpx logs each at INFO) and the SFU ran ICE
    # (aioice): quiet by default.
    assert any(m.startswith("realtime session created") for m in messages)
    noisy = [
        r
        for r in records
        if r["logger"].split(".")[0] in ("httpx", "httpcore", "aioice", "aiortc")
        and r["level"] in ("DEBUG", "INFO")
    ]
    assert noisy == []
