"""The room page in real Chromium, joined to a room that a bridge with synthetic Discord
speakers is in: the browser hears them, the bridge hears the browser's fake microphone,
mute keeps the m-line, a dropped connection rebuilds itself, a refused microphone is
explained. Screenshots of the page are kept under the test's tmp_path.

Everything runs in this process on 127.0.0.1: the local SFU, the service's HTTP server with
the web API, the bridge (an aiortc peer). Chromium runs with the flags of
test_sfu_chromium.py (ICE on loopback only, fake devices); its fake microphone beeps at
400 Hz, a short beep every half second or so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from bot.http import HealthServer
from bot.metrics import Metrics
from bot.web import IceServerSource, Role, TokenSigner, WebApi
from bot.web import api as web_api_module
from media.backoff import Backoff
from media.bridge import Bridge, BridgeConfig
from media.peer import PeerConfig
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory, MemberKind
from media.sfu import LocalSFU
from tests.e2e.test_sfu_chromium import CHROMIUM, CHROMIUM_ARGS
from tests.support.opus_source import encode_tone
from tests.support.signals import band_level_db
from tests.support.waiting import wait_until_async

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "e2e-web-page-secret-" + "y" * 32
ROOM = "lobby"
BRIDGE_MEMBER = "discord:1001:2002"
BRIDGE_NAME = "#general (Test Guild)"
SPEAKERS = {"dc:1001:42": ("Ada Lovelace", 550.0), "dc:1001:43": ("Grace Hopper", 700.0)}
BEEP_HZ = 400.0
"""Chrome's fake microphone beeps at 400 Hz (media/audio/fake_audio_input_stream.cc,
kBeepFrequency), not 1 kHz: measured here as the dominant frequency of the bridge's mix."""
BEEP_PRESENT_DB = -50.0
FAST_PEER = PeerConfig(recovery=Backoff(initial_s=0.05, max_s=0.5))


# -- the service side ----------------------------------------------------------------------------


@dataclass
class Stack:
    sfu: LocalSFU
    directory: InMemoryDirectory
    web: WebApi
    bridge: Bridge
    public_url: str

    def room_url(self, role: Role = Role.SPEAKER) -> str:
        token, _ = self.web.signer.issue_invite(ROOM, role, 3600)
        return f"{self.public_url}/r/{ROOM}#t={token}"

    async def web_members(self) -> list[str]:
        return [m.member_id for m in await self.directory.members(ROOM) if m.kind is MemberKind.WEB]

    async def beep_level(self, seconds: float = 3.0) -> float:
        """The fake microphone's ~1 kHz beep in the bridge's output, best band in 950-1050 Hz."""
        frames = []
        async for frame in self.bridge.frames():
            frames.append(frame.copy())
            if len(frames) >= seconds * 50:
                break
        pcm = np.concatenate(frames)
        return band_level_db(pcm, BEEP_HZ, width_hz=25.0)

    async def hears_beep(self, within_s: float = 15.0) -> float:
        """Until the beep is in the bridge's output (the bridge subscribes after a publish)."""
        deadline = time.monotonic() + within_s
        while (level := await self.beep_level(2.0)) <= BEEP_PRESENT_DB:
            if time.monotonic() > deadline:
                raise AssertionError(f"no beep in the bridge output: {level:.1f} dB")
        return level


@contextlib.asynccontextmanager
async def discord_speakers(bridge: Bridge) -> AsyncIterator[None]:
    """The bridge's synthetic Discord speakers: one tone each, paced at 20 ms."""
    inputs = [
        (
            bridge.speaker(track, display_name=name, user_id=track.rsplit(":", 1)[1]),
            encode_tone(hz, 50),
        )
        for track, (name, hz) in SPEAKERS.items()
    ]

    async def feed() -> None:
        start = time.monotonic()
        index = 0
        while True:
            for speaker, packets in inputs:
                speaker.push(packets[index % len(packets)])
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - time.monotonic()))

    task = asyncio.create_task(feed(), name="synthetic-discord-speakers")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with (
        LocalSFU() as sfu,
        RealtimeClient(
            sfu.base_url,
            sfu.app_id,
            sfu.app_secret,
        ) as realtime,
    ):
        directory = InMemoryDirectory()

        async def room_exists(room: str) -> bool:
            return bool(await directory.members(room))

        web = WebApi(
            directory=directory,
            realtime=realtime,
            signer=TokenSigner(SECRET),
            ice=IceServerSource.none(),
            public_url="http://127.0.0.1",
            room_exists=room_exists,
        )
        http = HealthServer("127.0.0.1", 0, Metrics(), {})
        web.attach(http.app)  # as Service.start() does
        await web.start()
        await http.start()
        web.public_url = f"http://127.0.0.1:{http.port}"
        bridge = Bridge(
            ROOM, realtime, directory, BridgeConfig(BRIDGE_MEMBER, BRIDGE_NAME, peer=FAST_PEER)
        )
        await bridge.start()
        try:
            async with discord_speakers(bridge):
                yield Stack(sfu, directory, web, bridge, web.public_url)
        finally:
            await web.stop()
            await http.stop()
            await bridge.stop()


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, *, fake_ui: bool = True) -> AsyncIterator[BrowserContext]:
    args = (
        CHROMIUM_ARGS
        if fake_ui
        else [a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"]
    )
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / f"profile-{int(fake_ui)}"),
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 820},
        )
        try:
            yield context
        finally:
            await context.close()


# -- the page driver -----------------------------------------------------------------------------


class RoomPage:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    async def open(self, url: str) -> None:
        await self.page.goto(url)
        await self.page.get_by_label("Your name").wait_for()

    async def status(self) -> str:
        return (await self.page.locator("#status").text_content() or "").strip()

    async def until_status(self, text: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (status := await self.status()) != text:
            if time.monotonic() > deadline:
                raise AssertionError(f"status {status!r}, wanted {text!r}; console: {self.console}")
            await asyncio.sleep(0.1)

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("() => window.switchboard.stats()")

    async def hears(self, track_names: list[str], timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Inbound audio with energy and a non-zero level on each named track."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await self.stats()
            inbound = {
                i["track"].rsplit("/", 1)[1]: i for i in stats.get("inbound", []) if i.get("track")
            }
            heard = [inbound.get(name) for name in track_names]
            if all(
                i
                and i["packetsReceived"] > 50
                and i["totalAudioEnergy"] > 0
                and i["audioLevel"] > 0
                for i in heard
            ):
                return heard  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise AssertionError(f"no audio on {track_names}: {stats}; console: {self.console}")
            await asyncio.sleep(0.25)

    async def flowing(self, track_name: str, packets: int = 25) -> None:
        """`packets` more packets with audio energy arrive on the track (not only arrived once)."""

        async def counters() -> tuple[int, float]:
            [inbound] = [
                i
                for i in (await self.stats())["inbound"]
                if (i.get("track") or "").endswith("/" + track_name)
            ]
            return inbound["packetsReceived"], inbound["totalAudioEnergy"]

        start_packets, start_energy = await counters()

        async def more() -> bool:
            now_packets, now_energy = await counters()
            return now_packets - start_packets >= packets and now_energy > start_energy

        await wait_until_async(more, what=f"{packets} more packets with energy on {track_name}")

    async def roster(self) -> str:
        return await self.page.locator("#members").inner_text()


# -- scenarios ------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_page_talks_with_a_bridged_channel(stack: Stack, tmp_path: Path, monkeypatch) -> None:
    # Credentials of 4 s: the page must refresh them (at half-life) to stay in the room.
    monkeypatch.setattr(web_api_module, "CREDENTIAL_TTL_S", 4)
    async with chromium(tmp_path) as context:
        room = RoomPage(context.pages[0] if context.pages else await context.new_page())
        page = room.page
        await room.open(stack.room_url())
        assert await page.locator("#invite-info").inner_text() != ""
        await page.get_by_label("Your name").fill("Web Tester")
        await page.get_by_text("Audio settings").click()
        # Raw fake-device audio: voice processing would squash the fake microphone's beep.
        await page.get_by_label("Echo cancellation and noise suppression").uncheck()
        await page.get_by_role("button", name="Join with microphone").click()
        await room.until_status("Connected")

        # The participant list: the bridged channel, its Discord speakers, and us.
        await page.locator(".person", has_text="Grace Hopper").wait_for()
        roster = await room.roster()
        for name in (BRIDGE_NAME, "Ada Lovelace", "Grace Hopper", "Web Tester (you)"):
            assert name in roster, roster
        await page.locator(".person.speaking", has_text="Ada Lovelace").wait_for(timeout=10_000)
        assert await page.get_by_label("Volume for Ada Lovelace").count() == 1

        # The browser hears both Discord speakers (inbound stats with energy and level).
        heard = await room.hears(list(SPEAKERS))
        print("browser inbound:", heard)
        stats = await room.stats()
        pair = stats["pair"]
        assert (
            pair["local"]["address"] == "127.0.0.1" and pair["remote"]["address"] == "127.0.0.1"
        ), pair
        [mic] = [t for t in stats["transceivers"] if t["sending"]]
        assert mic["direction"] == "sendonly"

        # The page keeps its credential fresh.
        [web_id] = await stack.web_members()
        participant = stack.web.registry.get(web_id)
        deadline = participant.credential_deadline
        await wait_until_async(
            lambda: _later(participant.credential_deadline, deadline), timeout_s=6, what="a refresh"
        )

        # The bridge hears the browser's microphone: the fake device's 400 Hz beep.
        await wait_until_async(
            lambda: _published(stack, web_id), what="the page's microphone in the room"
        )
        beep = await stack.hears_beep()
        print(f"beep in the bridge output: {beep:.1f} dB")

        # Per-person volume (keyboard-operable sliders) reaches the audio element playing them.
        await page.get_by_label("Volume for Grace Hopper").focus()
        await page.keyboard.press("Home")
        assert await sink_volumes(page) == {"dc:1001:42": 1.0, "dc:1001:43": 0.0}
        slider = page.get_by_label("Volume for Ada Lovelace")
        await slider.focus()
        for _ in range(10):
            await page.keyboard.press("ArrowLeft")
        assert await sink_volumes(page) == {"dc:1001:42": 0.5, "dc:1001:43": 0.0}
        assert await slider.get_attribute("aria-valuetext") == "50%"

        await page.screenshot(path=str(tmp_path / "room-desktop.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(tmp_path / "room-phone.png"), full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 820})
        print(f"screenshots: {tmp_path / 'room-desktop.png'} {tmp_path / 'room-phone.png'}")
        for shot in ("room-desktop.png", "room-phone.png"):
            assert (tmp_path / shot).stat().st_size > 10_000, shot  # a rendered page, not blank

        # Mute (keyboard shortcut M): the track is disabled, its m-line stays, the beep stops.
        await page.locator("body").click(position={"x": 5, "y": 300})
        await page.keyboard.press("m")
        assert await page.locator("#mute").get_attribute("aria-pressed") == "true"
        stats = await room.stats()
        assert stats["muted"] and stats["micEnabled"] is False, stats
        assert any(
            t["mid"] == mic["mid"] and t["currentDirection"] == "sendonly"
            for t in stats["transceivers"]
        )
        # What was in flight drains first: wait for one quiet window, then judge a full one.
        await wait_until_async(
            lambda: _quiet(stack, beep), timeout_s=15, what="the beep to stop after muting"
        )
        muted = await stack.beep_level(3.0)
        print(f"beep while muted: {muted:.1f} dB")
        assert muted < beep - 20, (muted, beep)
        await page.get_by_role("button", name="Unmute").click()
        assert await page.locator("#mute").get_attribute("aria-pressed") == "false"

        # A Discord speaker leaves: the page drops them and closes their pulled track with a
        # negotiated close (their m-line is not the BUNDLE tag); the rest keeps playing.
        grace_mid = next(
            i["mid"] for i in (await room.stats())["inbound"] if i["track"].endswith("/dc:1001:43")
        )
        await stack.bridge.remove_speaker("dc:1001:43")
        await page.locator(".person", has_text="Grace Hopper").wait_for(state="detached")
        await wait_until_async(
            lambda: _stopped(room, grace_mid), what="Grace's transceiver to stop"
        )
        stats = await room.stats()
        assert stats["connectionState"] == "connected" and stats["state"] == "connected", stats
        assert await sink_volumes(page) == {"dc:1001:42": 0.5}
        await room.flowing("dc:1001:42")

        # A dropped events connection: the page rebuilds its session and rejoins by itself.
        participant = stack.web.registry.get(web_id)
        assert participant.socket is not None
        await participant.socket.close(code=1012, message=b"service restart")
        await wait_until_async(
            lambda: _rejoined(stack, web_id), timeout_s=20, what="a new participant"
        )
        await room.until_status("Connected")
        [new_id] = await stack.web_members()
        assert new_id != web_id
        await room.hears(["dc:1001:42"])
        assert await sink_volumes(page) == {"dc:1001:42": 0.5}  # kept across the rebuild
        await wait_until_async(lambda: _published(stack, new_id), what="the microphone again")
        again = await stack.hears_beep()
        print(f"beep after reconnecting: {again:.1f} dB")
        assert not [line for line in room.console if line.startswith("pageerror")], room.console

        await page.get_by_role("button", name="Leave").click()
        await wait_until_async(lambda: _no_web_members(stack), what="the page to leave")
        # The server forgets the member before it answers; the page writes after the answer.
        await page.locator("#ended").get_by_text("You left the room.").wait_for(timeout=5000)
        assert "You left the room." in await page.locator("#ended").inner_text()


@pytest.mark.timeout(90)
async def test_refused_microphone_is_explained_and_listening_still_works(
    stack: Stack, tmp_path: Path
) -> None:
    # No fake UI: the permission prompt is dismissed, as when a person clicks "Block".
    async with chromium(tmp_path, fake_ui=False) as context:
        room = RoomPage(context.pages[0] if context.pages else await context.new_page())
        page = room.page
        await room.open(stack.room_url())
        await page.get_by_label("Your name").fill("Blocked Mic")
        await page.get_by_role("button", name="Join with microphone").click()
        alert = page.get_by_role("alert")
        await alert.wait_for()
        assert "Microphone access is blocked" in await alert.inner_text()
        assert await stack.web_members() == []
        await page.screenshot(path=str(tmp_path / "room-denied.png"), full_page=True)
        await page.get_by_role("button", name="Join listening only").click()
        await room.until_status("Connected")
        await room.hears(list(SPEAKERS))
        assert "Listening" in await room.roster()
        assert await page.locator("#mute").is_hidden()
        [member] = [m for m in await stack.directory.members(ROOM) if m.kind is MemberKind.WEB]
        assert (member.display_name, member.tracks) == ("Blocked Mic", ())
        await page.screenshot(path=str(tmp_path / "room-listener.png"), full_page=True)


@pytest.mark.timeout(120)
async def test_moderator_mute_unmute_and_kick_a_browser_participant(
    stack: Stack, tmp_path: Path
) -> None:
    async with chromium(tmp_path) as context:
        room = RoomPage(context.pages[0] if context.pages else await context.new_page())
        page = room.page
        await room.open(stack.room_url())
        await page.get_by_label("Your name").fill("Loud Tester")
        await page.get_by_text("Audio settings").click()
        await page.get_by_label("Echo cancellation and noise suppression").uncheck()
        await page.get_by_role("button", name="Join with microphone").click()
        await room.until_status("Connected")
        [web_id] = await stack.web_members()
        await wait_until_async(
            lambda: _published(stack, web_id), what="the page's microphone in the room"
        )
        beep = await stack.hears_beep()

        # Muted by a moderator: the service stops forwarding it, whatever the page does.
        participant = stack.web.registry.get(web_id)
        await stack.web.registry.set_muted(participant, True, "moderator")
        await page.get_by_role("alert").get_by_text("A moderator has muted you").wait_for()
        await page.locator(".person", has_text="Muted by a moderator").wait_for()
        await asyncio.sleep(0.5)
        muted = await stack.beep_level(3.0)
        print(f"beep while muted by a moderator: {muted:.1f} dB (before {beep:.1f} dB)")
        assert muted < beep - 20 and muted <= BEEP_PRESENT_DB, (muted, beep)

        # Unmuted: the page reconnects and publishes again by itself.
        await stack.web.registry.set_muted(participant, False, "moderator")
        await wait_until_async(
            lambda: _rejoined(stack, web_id), timeout_s=20, what="a new participant"
        )
        await room.until_status("Connected")
        [new_id] = await stack.web_members()
        await wait_until_async(lambda: _published(stack, new_id), what="the microphone again")
        await stack.hears_beep()

        # Kicked: the page says so and does not come back.
        assert await stack.web.registry.kick(new_id, "moderator")
        await page.locator("#ended").get_by_text("A moderator removed you").wait_for(timeout=10_000)
        await asyncio.sleep(1.0)
        assert await stack.web_members() == []
        assert not [line for line in room.console if line.startswith("pageerror")], room.console


async def _later(value: float, than: float) -> bool:
    return value > than


async def _stopped(room: RoomPage, mid: str) -> bool:
    transceivers = (await room.stats())["transceivers"]
    return any(t["mid"] == mid and t["currentDirection"] == "stopped" for t in transceivers) or all(
        t["mid"] != mid for t in transceivers
    )


async def sink_volumes(page: Page) -> dict[str, float]:
    pairs = await page.evaluate(
        "() => [...window.switchboard.call.sinks.values()].map(s => [s.trackName, s.audio.volume])"
    )
    return dict(pairs)


async def _published(stack: Stack, member_id: str) -> bool:
    return any(m.member_id == member_id and m.tracks for m in await stack.directory.members(ROOM))


async def _rejoined(stack: Stack, old_id: str) -> bool:
    members = await stack.web_members()
    return bool(members) and old_id not in members


async def _no_web_members(stack: Stack) -> bool:
    return not await stack.web_members()


async def _quiet(stack: Stack, beep_db: float) -> bool:
    # 2 s always hold one of the fake microphone's once-a-second beeps, had it still been sent.
    return await stack.beep_level(2.0) < beep_db - 20
