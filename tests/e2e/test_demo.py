"""The try-out without Discord, as README's `make demo` runs it: `scripts/demo` starts the
service process on its embedded default (local SFU, SQLite) and prints a link minted by
`python -m bot invite`; two Chromium tabs open it and each hears the other's microphone.

Chromium's fake microphone beeps at 400 Hz (see test_web_page.py). What each page receives
is captured from the remote track through WebAudio (48 kHz PCM) and checked here: the
dominant frequency is the beep's, at a level well above silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tests.e2e.test_sfu_chromium import CHROMIUM, CHROMIUM_ARGS
from tests.support.signals import band_level_db, dominant_frequency

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BEEP_HZ = 400.0
BEEP_PRESENT_DB = -50.0
CAPTURE_S = 3.0

# Records the first remote track a page plays, as 48 kHz mono PCM, for `seconds`.
CAPTURE_JS = """
async (seconds) => {
  const sinks = [...window.switchboard.call.sinks.values()];
  if (sinks.length === 0) return null;
  const sink = sinks[0];
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.resume();
  const source = ctx.createMediaStreamSource(sink.audio.srcObject);
  const recorder = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  recorder.onaudioprocess = (e) => chunks.push(Float32Array.from(e.inputBuffer.getChannelData(0)));
  source.connect(recorder);
  recorder.connect(ctx.destination);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  recorder.disconnect();
  source.disconnect();
  await ctx.close();
  const samples = [];
  for (const chunk of chunks) for (const v of chunk) samples.push(v);
  return { memberId: sink.memberId, trackName: sink.trackName, samples };
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def demo(tmp_path: Path) -> AsyncIterator[str]:
    """`scripts/demo` running (as `make demo` runs it), on free ports; yields its link."""
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "DISCORD_"))}
    env.pop("PORT", None)
    env |= {
        "PYTHONPATH": str(ROOT),
        "SWITCHBOARD_HTTP_PORT": str(http_port),
        "SWITCHBOARD_HTTP_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "SWITCHBOARD_SFU_PORT": "0",
        "SWITCHBOARD_STORE_PATH": str(tmp_path / "store.sqlite3"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "demo"),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr_task = asyncio.create_task(process.stderr.read())  # type: ignore[union-attr]
    try:
        link = ""
        async with asyncio.timeout(60):
            while not link:
                line = await process.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"demo ended: {(await stderr_task).decode()}")
                text = line.decode().strip()
                if text.startswith("http"):
                    link = text
        yield link
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        log = (await stderr_task).decode()
        print(log[-3000:])
    assert process.returncode == 0, log[-3000:]
    assert "service stopped" in log


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            await context.close()


async def join(page: Page, link: str, name: str) -> str:
    """Open the link, join with the microphone; the page's participant id."""
    await page.goto(link)
    await page.get_by_label("Your name").fill(name)
    await page.get_by_text("Audio settings").click()
    # Raw fake-device audio: voice processing would squash the fake microphone's beep.
    await page.get_by_label("Echo cancellation and noise suppression").uncheck()
    await page.get_by_role("button", name="Join with microphone").click()
    deadline = time.monotonic() + 30
    while (await page.locator("#status").text_content() or "").strip() != "Connected":
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not connect: {await page.content()}")
        await asyncio.sleep(0.1)
    return (await page.evaluate("() => window.switchboard.stats()"))["participantId"]


async def beep_from(page: Page, other_id: str, within_s: float = 30.0) -> tuple[float, float]:
    """(dominant Hz, level at the beep in dB) of the other page's track, once it carries it."""
    deadline = time.monotonic() + within_s
    while True:
        captured = await page.evaluate(CAPTURE_JS, CAPTURE_S)
        if captured is not None and captured["memberId"] == other_id:
            pcm = (np.asarray(captured["samples"], dtype=np.float64) * 32767).astype(np.int16)
            assert len(pcm) >= CAPTURE_S * 48_000 * 0.8, len(pcm)
            level = band_level_db(pcm, BEEP_HZ, width_hz=25.0)
            hz = dominant_frequency(pcm)
            if level > BEEP_PRESENT_DB and abs(hz - BEEP_HZ) < 15:
                return hz, level
        if time.monotonic() > deadline:
            raise AssertionError(f"no beep from {other_id}: {captured and captured['memberId']}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(150)
async def test_demo_link_lets_two_tabs_hear_each_other(tmp_path: Path) -> None:
    async with demo(tmp_path) as link, chromium(tmp_path) as context:
        assert "/r/lobby#t=" in link
        first = context.pages[0] if context.pages else await context.new_page()
        second = await context.new_page()
        first_id = await join(first, link, "First Tab")
        second_id = await join(second, link, "Second Tab")
        assert first_id != second_id
        heard_by_second = await beep_from(second, first_id)
        heard_by_first = await beep_from(first, second_id)
        print(
            f"first tab's beep in the second: {heard_by_second[0]:.0f} Hz, "
            f"{heard_by_second[1]:.1f} dB; second's in the first: {heard_by_first[0]:.0f} Hz, "
            f"{heard_by_first[1]:.1f} dB"
        )
        roster = await first.locator("#members").inner_text()
        assert "Second Tab" in roster and "First Tab (you)" in roster, roster
