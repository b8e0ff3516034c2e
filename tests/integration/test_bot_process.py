"""`python -m bot` as an operator runs it: bad config, no token, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN",)}
    env["SWITCHBOARD_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(ROOT)
    return env


async def test_bad_config_names_key_value_and_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[sfu]\nport = 8787\n\n[http]\nport = "abc"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=environment(config),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stderr.decode()
    assert process.returncode == 2, text
    assert "http.port" in text and "abc" in text and "line 5" in text


async def test_without_token_it_explains_and_still_serves_sfu_and_health(tmp_path):
    http_port, sfu_port = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"[sfu]\nport = {sfu_port}\n\n[http]\nport = {http_port}\n\n"
        f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=environment(config),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    live = await http.get(f"http://127.0.0.1:{http_port}/live")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert live.status_code == 200
            ready = await http.get(f"http://127.0.0.1:{http_port}/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["discord"] == "DISCORD_TOKEN is not set"
            session = await http.post(
                f"http://127.0.0.1:{sfu_port}/v1/apps/local/sessions/new",
                headers={"Authorization": "Bearer local-dev-secret"},
            )
            assert session.status_code == 201
            metrics = await http.get(f"http://127.0.0.1:{http_port}/metrics")
            assert "switchboard_bridges" in metrics.text
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert time.monotonic() - started < 10
        assert process.returncode == 0
        log = stderr.decode()
        assert "DISCORD_TOKEN" in log and "Developer Portal" in log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
