"""Real Chromium pages (fake microphone) push, pull, close and re-pull through the local SFU.

Only a real browser shows what docs/webrtc-interop.md §2 lists; aiortc on both ends shows none.
The page (tests/e2e/sfu_page) is served from its own origin on 127.0.0.1 and calls the SFU's
HTTP API itself, cross-origin, as Cloudflare's echo example does. Audio is checked on the
receiving side: Chrome's inbound-rtp stats (packets, energy, concealment), or decoded PCM
when an aiortc client receives.

Network: nothing but 127.0.0.0/8. The SFU offers only 127.0.0.1 candidates, and Chrome runs
with `--webrtc-ip-handling-policy=default_public_interface_only` (RFC 8828 mode 3): it
enumerates no interfaces, binds its ICE sockets to 0.0.0.0 / [::] and gathers no host
candidate at all, so it never learns or signals eth0's addresses, and its checks to
127.0.0.1 leave from 127.0.0.1. The selected pair is 127.0.0.1 (peer-reflexive) to 127.0.0.1
(host); every test asserts it. Without the policy Chrome gathers 192.0.2.2, fd00::2,
127.0.0.1 and ::1 and selects 192.0.2.2 -> 127.0.0.1 (the loopback candidate carries
network-cost 50, eth0's 0). `--force-webrtc-ip-handling-policy` is ignored by this build.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from playwright.async_api import BrowserContext, Page, async_playwright

from media.sfu import LocalSFU
from media.sfu.session import SessionState
from tests.integration.test_sfu_lifecycle import establish_by_sfu_offer, open_channel
from tests.support.rtc import Api, Client
from tests.support.signals import (
    ToneTrack,
    collect_pcm,
    decode_opus,
    dominant_frequency,
    longest_gap_s,
    longest_media_gap_s,
    pause_beyond,
    rms_dbfs,
)
from tests.support.waiting import wait_until_async

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE_DIR = Path(__file__).parent / "sfu_page"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
    # No interface enumeration, no host candidates: ICE runs on 127.0.0.1 only (see above).
    "--webrtc-ip-handling-policy=default_public_interface_only",
    # The page plays every received track (Chrome decodes remote audio, and counts samples
    # and energy in its stats, only for a track attached to a sink); don't let the autoplay
    # heuristics of a given Chrome version decide whether play() may start.
    "--autoplay-policy=no-user-gesture-required",
    # Should a host candidate ever be gathered, never hide it behind an mDNS name: the
    # mDNS responder would multicast on eth0.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

AUDIO_WINDOW_S = 2.0
MIN_PACKETS_PER_WINDOW = 50  # 20 ms packets: 100 expected in 2 s
MAX_CONCEALED_RATIO = 0.2
PLAYOUT_RATE_HZ = 48_000  # Chrome's audio inbound stats count samples at the Opus rate
LATE_WINDOWS = 3
PUSH_RETRY_S = 10.0


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def sfu() -> AsyncIterator[LocalSFU]:
    async with LocalSFU() as server:
        yield server


@pytest.fixture
async def api(sfu: LocalSFU) -> AsyncIterator[Api]:
    client = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
    yield client
    await client.aclose()


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page, served from an origin of its own (so the API calls are cross-origin)."""
    app = web.Application()
    app.router.add_static("/", PAGE_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/index.html"
    await runner.cleanup()


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    profile = tmp_path / "chromium-profile"  # a fresh user-data-dir per test
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            await context.close()


async def open_page(page: Page, sfu: LocalSFU, page_url: str) -> Browser:
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    await page.goto(page_url)
    await page.wait_for_function("() => window.sfu !== undefined")
    return Browser(page, sfu, console)


@pytest.fixture
async def browser(sfu: LocalSFU, page_url: str, context: BrowserContext) -> AsyncIterator[Browser]:
    # Argument order = set-up order: Chromium is closed before the SFU stops.
    page = context.pages[0] if context.pages else await context.new_page()
    driver = await open_page(page, sfu, page_url)
    try:
        yield driver
    finally:
        await driver.dump_logs()


@pytest.fixture
async def second_browser(
    sfu: LocalSFU, page_url: str, context: BrowserContext, browser: Browser
) -> AsyncIterator[Browser]:
    """A second page (a second participant) in the same Chromium."""
    driver = await open_page(await context.new_page(), sfu, page_url)
    try:
        yield driver
    finally:
        await driver.dump_logs()


# -- the page driver -------------------------------------------------------------------------


@dataclass(frozen=True)
class Closed:
    status: int
    body: dict[str, Any]
    renegotiation_s: float
    """From the page's stop() of the transceivers to its applied answer."""


@dataclass(frozen=True)
class AudioCheck:
    packets: int
    energy: float
    level: float
    samples: int
    concealed: int
    lost: int


class Browser:
    """Drives `window.sfu` in the page: one SfuSession per name."""

    def __init__(self, page: Page, sfu: LocalSFU, console: list[str]) -> None:
        self.page = page
        self.sfu = sfu
        self.console = console
        self.session_ids: dict[str, str] = {}

    async def js(self, body: str, arg: Any = None) -> Any:
        return await self.page.evaluate(f"async (arg) => {{ {body} }}", arg)

    async def open(self, name: str) -> str:
        session_id = await self.js(
            "const s = new sfu.SfuSession(...arg.cfg); sfu.sessions[arg.name] = s;"
            " return await s.open();",
            {"name": name, "cfg": [self.sfu.base_url, self.sfu.app_id, self.sfu.app_secret]},
        )
        self.session_ids[name] = session_id
        return session_id

    async def push_microphone(self, name: str, track_names: list[str]) -> list[str]:
        """Push `len(track_names)` fake-microphone tracks in one offer; returns their mids."""
        return await self._push(name, track_names, "await sfu.microphone(arg.names.length)")

    async def push_tones(self, name: str, tones: dict[str, float]) -> list[str]:
        """Push one steady sine track per {trackName: Hz} in one offer; returns their mids."""
        return await self._push(
            name, list(tones), "await sfu.tones(arg.frequencies)", list(tones.values())
        )

    async def _push(
        self,
        name: str,
        track_names: list[str],
        tracks_js: str,
        frequencies: list[float] | None = None,
    ) -> list[str]:
        out = await self.js(
            f"""
            const s = sfu.sessions[arg.name];
            const tracks = {tracks_js};
            const pushed = tracks.map((track, i) => ({{ track, name: arg.names[i] }}));
            const {{ result, mids }} = await s.push(pushed);
            return {{ result, mids }};
            """,
            {"name": name, "names": track_names, "frequencies": frequencies},
        )
        result = out["result"]
        assert result["requiresImmediateRenegotiation"] is False
        assert [t.get("errorCode") for t in result["tracks"]] == [None] * len(track_names), result
        assert [t["trackName"] for t in result["tracks"]] == track_names
        assert [t["mid"] for t in result["tracks"]] == out["mids"]
        return out["mids"]

    async def pull(self, name: str, items: list[tuple[str, str]]) -> list[str]:
        """Pull (sessionId, trackName) items, retrying while the publisher isn't sending yet."""
        deadline = time.monotonic() + PUSH_RETRY_S
        body = [{"sessionId": sid, "trackName": track} for sid, track in items]
        while True:
            result = await self.js(
                "return await sfu.sessions[arg.name].pull(arg.items);",
                {"name": name, "items": body},
            )
            errors = [t.get("errorCode") for t in result["tracks"]]
            if errors == [None] * len(items):
                assert result["requiresImmediateRenegotiation"] is True
                assert result["sessionDescription"]["type"] == "offer"
                return [t["mid"] for t in result["tracks"]]
            assert set(errors) <= {None, "not_found_track_error"}, result
            assert not result["requiresImmediateRenegotiation"], (
                "partial pulls are not retried here"
            )
            if time.monotonic() > deadline:
                raise AssertionError(f"publisher never started sending: {result}")
            await asyncio.sleep(0.1)

    async def close(self, name: str, mids: list[str]) -> Closed:
        out = await self.js(
            "return await sfu.sessions[arg.name].close(arg.mids);", {"name": name, "mids": mids}
        )
        return Closed(out["status"], out["json"], out["renegotiationMs"] / 1000)

    async def bundle_tag(self, name: str) -> str:
        return await self.js("return sfu.sessions[arg].bundleTag();", name)

    async def packets_received(self, name: str, mid: str) -> int:
        inbound = (await self.stats(name))["inbound"].get(mid) or {}
        return inbound.get("packetsReceived") or 0

    async def stats(self, name: str) -> dict[str, Any]:
        return await self.js("return await sfu.sessions[arg.name].stats();", {"name": name})

    async def state(self, name: str) -> dict[str, Any]:
        return await self.js("return await sfu.sessions[arg.name].state();", {"name": name})

    async def hears(self, name: str, mid: str, window_s: float = AUDIO_WINDOW_S) -> AudioCheck:
        """Audio arrives on `mid` of session `name`: packets, energy, little concealment.

        Judged over `window_s` of the page's playout (its sample count), not of the wall
        clock, so a page that reports its stats late still judges the same stretch of audio.
        Concealment with packets lost fails at once. Concealment with none lost means packets
        came late — on a starved machine, from the test's own real-time sender — so the next
        window is judged instead, `LATE_WINDOWS` at most: a forwarding fault that conceals
        without loss (bad timestamps, say) persists and still fails.
        """
        before = await self._inbound(name, mid, wait=True)
        for _ in range(LATE_WINDOWS):
            check, before = await self._window(name, mid, window_s, before)
            print(f"audio on {name}/{mid}: {check}")
            assert check.packets >= MIN_PACKETS_PER_WINDOW * window_s / AUDIO_WINDOW_S, check
            assert check.energy > 0, check
            assert check.samples > 0, check
            if check.concealed <= MAX_CONCEALED_RATIO * check.samples:
                return check
            assert check.lost == 0, check
        raise AssertionError(f"over {MAX_CONCEALED_RATIO:.0%} concealed in every window: {check}")

    async def _window(
        self, name: str, mid: str, window_s: float, before: dict[str, Any]
    ) -> tuple[AudioCheck, dict[str, Any]]:
        after = before

        async def played() -> bool:
            nonlocal after
            after = await self._inbound(name, mid)
            samples = after["totalSamplesReceived"] - before["totalSamplesReceived"]
            return samples >= window_s * PLAYOUT_RATE_HZ

        await wait_until_async(played, timeout_s=window_s * 5, what=f"{window_s} s played on {mid}")
        check = AudioCheck(
            packets=after["packetsReceived"] - before["packetsReceived"],
            energy=after["totalAudioEnergy"] - before["totalAudioEnergy"],
            level=after["audioLevel"],
            samples=after["totalSamplesReceived"] - before["totalSamplesReceived"],
            concealed=after["concealedSamples"] - before["concealedSamples"],
            lost=(after.get("packetsLost") or 0) - (before.get("packetsLost") or 0),
        )
        return check, after

    async def _inbound(self, name: str, mid: str, wait: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + (10.0 if wait else 0.0)
        while True:
            stats = await self.stats(name)
            inbound = stats["inbound"].get(mid)
            if inbound and inbound.get("packetsReceived") and inbound.get("totalSamplesReceived"):
                return inbound
            if time.monotonic() >= deadline:
                raise AssertionError(f"no inbound audio on mid {mid}: {stats}")
            await asyncio.sleep(0.1)

    async def assert_loopback_pair(self, name: str) -> dict[str, Any]:
        stats = await self.stats(name)
        pair = stats["pair"]
        print(f"selected pair on {name}: {pair}")
        assert pair is not None, stats
        assert pair["local"]["address"] == "127.0.0.1", pair
        assert pair["remote"]["address"] == "127.0.0.1", pair
        # No interface address was gathered or signalled: Chrome's only local candidates are
        # its wildcard sockets and the peer-reflexive 127.0.0.1 the SFU saw.
        gathered = await self.js("return sfu.sessions[arg].localCandidates;", name)
        addresses = [c.split()[4] for c in gathered] + [
            c.split()[1].rsplit(":", 1)[0] for c in stats["candidates"] if c.startswith("local")
        ]
        assert all(_loopback_or_unspecified(a) for a in addresses), (gathered, stats["candidates"])
        return pair

    async def dump_logs(self) -> None:
        """Print the page's console and API calls (pytest shows them for failed tests)."""
        try:
            logs = await self.js(
                "return Object.fromEntries("
                "Object.entries(sfu.sessions).map(([k, s]) => [k, s.log]));"
            )
        except Exception as exc:  # the page may be gone already
            print("no page logs:", exc)
            return
        print("page console:", *self.console, sep="\n  ")
        for name, calls in logs.items():
            for call in calls:
                if isinstance(call, dict):
                    body = call.get("json") or {}
                    if "sessionDescription" in body:
                        body["sessionDescription"]["sdp"] = _sdp_outline(
                            body["sessionDescription"]["sdp"]
                        )
                print(f"{name}: {json.dumps(call)}")


def _loopback_or_unspecified(address: str) -> bool:
    ip = ipaddress.ip_address(address.strip("[]"))
    return ip.is_loopback or ip.is_unspecified


def _sdp_outline(sdp: str) -> list[str]:
    """The lines of an SDP that tell what was negotiated (m-lines, mids, BUNDLE, direction)."""
    keep = (
        "m=",
        "a=mid:",
        "a=group:",
        "a=sendonly",
        "a=recvonly",
        "a=sendrecv",
        "a=inactive",
        "a=extmap:",
        "a=rtpmap:",
    )
    return [line for line in sdp.splitlines() if line.startswith(keep)]


# -- aiortc helpers --------------------------------------------------------------------------


async def aiortc_pull(client: Client, items: list[tuple[str, str]]) -> dict[str, Any]:
    deadline = time.monotonic() + PUSH_RETRY_S
    while True:
        result = await client.pull(items)
        if all("errorCode" not in t for t in result["tracks"]):
            return result
        assert all(t.get("errorCode") in (None, "not_found_track_error") for t in result["tracks"])
        if time.monotonic() > deadline:
            raise AssertionError(f"publisher never started sending: {result}")
        await asyncio.sleep(0.1)


async def decoded_levels(client: Client, count: int, seconds: float = 3.0) -> list[float]:
    """rms dBFS of `seconds` of decoded audio on each of the client's first `count` tracks.

    Chrome's fake microphone beeps for ~100 ms every second, so 3 s always hold beeps.
    """
    tracks = [await asyncio.wait_for(client.tracks.get(), 5) for _ in range(count)]
    pcms = await asyncio.wait_for(asyncio.gather(*(collect_pcm(t, seconds) for t in tracks)), 15)
    return [rms_dbfs(np.asarray(pcm)) for pcm in pcms]


# -- scenarios -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_chrome_pushes_microphone_to_aiortc(browser: Browser, api: Api) -> None:
    session_id = await browser.open("a")
    [mid] = await browser.push_microphone("a", ["mic"])
    assert mid == "0"
    subscriber = Client(api)
    try:
        await subscriber.open()
        await aiortc_pull(subscriber, [(session_id, "mic")])
        [level] = await decoded_levels(subscriber, 1)
        print(f"decoded level {level:.1f} dBFS")
        assert level > -40, level
        stats = await browser.stats("a")
        assert stats["outbound"][mid]["packetsSent"] > 50, stats
        await browser.assert_loopback_pair("a")
    finally:
        await subscriber.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("chrome_pushes_first", [True, False], ids=["after-push", "pull-only"])
async def test_chrome_pulls_closes_and_repulls(
    browser: Browser, api: Api, chrome_pushes_first: bool
) -> None:
    publisher = Client(api)
    try:
        await publisher.open()
        await publisher.push(ToneTrack(440), "tone")
        await browser.open("a")
        if chrome_pushes_first:
            # Chrome offered first: the SFU's pull offers must keep Chrome's opus payload
            # type and header-extension ids (docs/webrtc-interop.md §2.1).
            await browser.push_microphone("a", ["mic"])
        [mid] = await browser.pull("a", [(publisher.session_id, "tone")])
        first = await browser.hears("a", mid)
        assert first.level > 0.05, first  # 0.3 of full scale sent

        closed = await browser.close("a", [mid])
        assert closed.status == 200, closed.body
        assert [(t["mid"], t["trackName"], t.get("errorCode")) for t in closed.body["tracks"]] == [
            (mid, "tone", None)
        ]
        assert closed.body["sessionDescription"]["type"] == "answer"
        state = await browser.state("a")
        assert {
            "location": "remote",
            "mid": mid,
            "trackName": "tone",
            "sessionId": publisher.session_id,
            "status": "inactive",
        } in state["tracks"]

        [again] = await browser.pull("a", [(publisher.session_id, "tone")])
        assert again != mid
        await browser.hears("a", again)
        stats = await browser.stats("a")
        assert stats["connectionState"] == "connected"
        await browser.assert_loopback_pair("a")

        if not chrome_pushes_first:
            # Now Chrome offers on a session whose numbering the SFU's offers set.
            [pushed] = await browser.push_microphone("a", ["mic"])
            assert pushed not in (mid, again)
            subscriber = Client(api)
            try:
                await subscriber.open()
                await aiortc_pull(subscriber, [(browser.session_ids["a"], "mic")])
                [level] = await decoded_levels(subscriber, 1)
                assert level > -40, level
            finally:
                await subscriber.close()
            await browser.hears("a", again)
    finally:
        await publisher.close()


@pytest.mark.timeout(90)
async def test_chrome_pushes_two_tracks_in_one_offer(browser: Browser, api: Api) -> None:
    session_id = await browser.open("a")
    mids = await browser.push_microphone("a", ["mic-1", "mic-2"])
    assert len(set(mids)) == 2
    subscriber = Client(api)
    try:
        await subscriber.open()
        result = await aiortc_pull(subscriber, [(session_id, "mic-1"), (session_id, "mic-2")])
        assert [t["trackName"] for t in result["tracks"]] == ["mic-1", "mic-2"]
        levels = await decoded_levels(subscriber, 2)
        print(f"decoded levels {levels} dBFS")
        assert all(level > -40 for level in levels), levels
        # Both tracks carry the same (cloned) beep, so tell them apart by their streams:
        # two SSRCs sent by Chrome, and packets counted on both publications by the SFU.
        outbound = (await browser.stats("a"))["outbound"]
        assert len({outbound[mid]["ssrc"] for mid in mids}) == 2, outbound
        assert all(outbound[mid]["packetsSent"] > 50 for mid in mids), outbound
        for name in ("mic-1", "mic-2"):
            publication = browser.sfu.registry.lookup(session_id, name)
            assert publication is not None and publication.packets > 50, name
        await browser.assert_loopback_pair("a")
    finally:
        await subscriber.close()


@pytest.mark.timeout(90)
async def test_chrome_pulls_its_own_track(browser: Browser) -> None:
    session_id = await browser.open("echo")
    [pushed] = await browser.push_microphone("echo", ["mic"])
    [pulled] = await browser.pull("echo", [(session_id, "mic")])
    assert pulled != pushed
    await browser.hears("echo", pulled, window_s=3.0)
    await browser.assert_loopback_pair("echo")


@pytest.mark.timeout(90)
async def test_chrome_closes_pushed_tracks(browser: Browser, api: Api) -> None:
    session_id = await browser.open("a")
    first, second = await browser.push_microphone("a", ["mic-1", "mic-2"])
    subscriber = Client(api)
    third_subscriber = Client(api)
    tone = Client(api)
    try:
        await subscriber.open()
        await aiortc_pull(subscriber, [(session_id, "mic-1")])

        # Closing a pushed track that is not the BUNDLE tag works...
        closed = await browser.close("a", [second])
        assert closed.status == 200, closed.body
        assert closed.body["tracks"] == [{"mid": second, "trackName": "mic-2"}]
        state = await browser.state("a")
        assert {t["trackName"]: t["status"] for t in state["tracks"]} == {
            "mic-1": "active",
            "mic-2": "inactive",
        }
        # ...and the session stays usable: the first track still flows, a new push may
        # recycle the closed m-line (docs/webrtc-interop.md §2.5), and a pull works.
        [level] = await decoded_levels(subscriber, 1)
        assert level > -40, level
        [third] = await browser.push_microphone("a", ["mic-3"])
        print(f"mids: first={first} second={second} third={third}")
        await third_subscriber.open()
        await aiortc_pull(third_subscriber, [(session_id, "mic-3")])
        third_track = await asyncio.wait_for(third_subscriber.tracks.get(), 5)
        assert rms_dbfs(await asyncio.wait_for(collect_pcm(third_track, 3.0), 15)) > -40
        await tone.open()
        await tone.push(ToneTrack(440), "tone")
        [mid] = await browser.pull("a", [(tone.session_id, "tone")])
        await browser.hears("a", mid)
        await browser.assert_loopback_pair("a")

        # Closing the first mid of the BUNDLE group moves Chrome to a new transport
        # (docs/webrtc-interop.md §2.3); the session follows it, and what it pushes and pulls
        # keeps flowing.
        assert await browser.bundle_tag("a") == first
        connection = browser.sfu.registry.get(session_id).pc
        ssrc = (await browser.stats("a"))["inbound"][mid]["ssrc"]
        closed = await browser.close("a", [first])
        print(f"closing the BUNDLE tag: {closed.status} after {closed.renegotiation_s:.3f} s")
        assert closed.status == 200, closed.body
        assert closed.body["tracks"] == [{"mid": first, "trackName": "mic-1"}]
        assert await browser.bundle_tag("a") != first
        moved = browser.sfu.registry.get(session_id)
        assert moved.pc is not connection
        state = await browser.state("a")
        assert {t["trackName"]: t["status"] for t in state["tracks"]} == {
            "mic-1": "inactive",
            "mic-2": "inactive",
            "mic-3": "active",
            "tone": "active",
        }
        await browser.hears("a", mid)
        assert (await browser.stats("a"))["inbound"][mid]["ssrc"] == ssrc
        assert rms_dbfs(await asyncio.wait_for(collect_pcm(third_track, 3.0), 15)) > -40
        await browser.assert_loopback_pair("a")
        assert moved.state is SessionState.CONNECTED
    finally:
        await subscriber.close()
        await third_subscriber.close()
        await tone.close()


# -- BUNDLE transport moves (docs/webrtc-interop.md §2.3) ---------------------------------
#
# partytracks closes a pushed track by stopping its transceiver and sending the offer with
# tracks/close, then keeps using the session. When the track held the first mid of Chrome's
# BUNDLE group, Chrome moves to a new transport; the SFU follows it on a new connection.

MOVE_GAP_ALLOWANCE_S = 0.1
"""How much more audio than the renegotiation lasted a moved publisher's listener may miss."""


async def packets_stop(driver: Browser, name: str, mid: str, window_s: float = 1.0) -> int:
    """Packets that still arrived on `mid` during `window_s` (after one in flight settled)."""
    await asyncio.sleep(0.2)
    before = await driver.packets_received(name, mid)
    await asyncio.sleep(window_s)
    return await driver.packets_received(name, mid) - before


async def wait_packets(client: Client, mid: str, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(client.received[mid]) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(client.received[mid])} packets on mid {mid}")
        await asyncio.sleep(0.05)


async def tone_frequency(client: Client, mid: str, since: float, seconds: float = 1.0) -> float:
    """Dominant frequency of `seconds` of the tapped packets that arrived after `since`."""
    frames = int(seconds / 0.02)
    deadline = time.monotonic() + 10.0
    while True:
        start = next((i for i, t in enumerate(client.arrived_at[mid]) if t >= since), None)
        if start is not None and len(client.received[mid]) >= start + frames:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no {seconds} s of packets on mid {mid} after {since}")
        await asyncio.sleep(0.05)
    pcm = decode_opus(p.payload for p in client.received[mid][start : start + frames])
    assert rms_dbfs(pcm) > -25, rms_dbfs(pcm)  # 0.3 of full scale sent: -13.5 dBFS
    return dominant_frequency(pcm)


def live_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]


@pytest.mark.timeout(120)
async def test_closing_the_first_push_keeps_the_session(
    browser: Browser, second_browser: Browser, api: Api
) -> None:
    """Push A and B, a second page pulls both, close A: B keeps arriving; push C into the
    freed slot (a second move): C is heard; the moved session pulls and hears a track."""
    session_id = await browser.open("pub")
    a, b = await browser.push_tones("pub", {"A": 440, "B": 660})
    await second_browser.open("sub")
    a_sub, b_sub = await second_browser.pull("sub", [(session_id, "A"), (session_id, "B")])
    await second_browser.hears("sub", a_sub)
    await second_browser.hears("sub", b_sub)
    session = browser.sfu.registry.get(session_id)
    connection = session.pc
    assert await browser.bundle_tag("pub") == a

    closed = await browser.close("pub", [a])
    print(f"close A: {closed.status} in {closed.renegotiation_s * 1000:.0f} ms")
    assert closed.status == 200, closed.body
    assert closed.body["tracks"] == [{"mid": a, "trackName": "A"}]
    assert await browser.bundle_tag("pub") == b
    assert session.pc is not connection  # the session moved...
    assert browser.sfu.registry.get(session_id) is session  # ...and is the same session
    assert session.state is SessionState.CONNECTED
    await second_browser.hears("sub", b_sub)
    assert await packets_stop(second_browser, "sub", a_sub) == 0
    state = await browser.state("pub")
    statuses = {t["trackName"]: t["status"] for t in state["tracks"]}
    assert statuses == {"A": "inactive", "B": "active"}

    # Chrome recycles A's slot for C and puts C first in BUNDLE: the transport moves again.
    connection = session.pc
    [c] = await browser.push_tones("pub", {"C": 880})
    assert await browser.bundle_tag("pub") == c
    assert session.pc is not connection
    [c_sub] = await second_browser.pull("sub", [(session_id, "C")])
    await second_browser.hears("sub", c_sub)
    await second_browser.hears("sub", b_sub)

    tone = Client(api)
    try:
        await tone.open()
        await tone.push(ToneTrack(330), "tone")
        [t] = await browser.pull("pub", [(tone.session_id, "tone")])
        await browser.hears("pub", t)
    finally:
        await tone.close()
    await browser.assert_loopback_pair("pub")
    await second_browser.assert_loopback_pair("sub")
    assert (await browser.stats("pub"))["connectionState"] == "connected"


@pytest.mark.timeout(120)
async def test_moved_publisher_audio_pauses_no_longer_than_the_renegotiation(
    browser: Browser, second_browser: Browser, api: Api
) -> None:
    """A listener of a moved publisher misses no more than the renegotiation + 100 ms.

    Chrome keeps sending on through the move (no RTP timestamp jumps: it holds, then sends),
    so the gap is a pause between arrivals. The test process (SFU and listener) shares a busy
    machine, and a stall of the process pauses every stream alike; a reference stream from a
    page that does not move tells such stalls apart from the move's own pause.
    """
    session_id = await browser.open("pub")
    a, _ = await browser.push_tones("pub", {"A": 440, "B": 660})
    reference_id = await second_browser.open("reference")
    await second_browser.push_tones("reference", {"R": 550})
    listener = Client(api, tap=True)
    try:
        await listener.open()
        pulled = await aiortc_pull(listener, [(session_id, "B"), (reference_id, "R")])
        mid, reference = (t["mid"] for t in pulled["tracks"])
        await wait_packets(listener, mid, 100)
        assert abs(await tone_frequency(listener, mid, 0.0) - 660) < 10

        started = time.monotonic()
        closed = await browser.close("pub", [a])
        assert closed.status == 200, closed.body
        await wait_packets(listener, mid, len(listener.received[mid]) + 100)

        missing = longest_media_gap_s(listener.received[mid])
        pause = longest_gap_s(listener.arrived_at[mid])
        own = pause_beyond(listener.arrived_at[mid], listener.arrived_at[reference])
        print(
            f"renegotiation {closed.renegotiation_s * 1000:.0f} ms; B: missing audio "
            f"{missing * 1000:.0f} ms, longest pause {pause * 1000:.0f} ms, of it not "
            f"shared by the reference {own * 1000:.0f} ms"
        )
        allowed = closed.renegotiation_s + MOVE_GAP_ALLOWANCE_S
        assert missing <= allowed, (missing, closed.renegotiation_s)
        assert own <= allowed, (own, closed.renegotiation_s)
        assert abs(await tone_frequency(listener, mid, started + closed.renegotiation_s) - 660) < 10
        # One stream throughout: the publisher kept its SSRC, the SFU the listener's.
        assert len({p.ssrc for p in listener.received[mid]}) == 1
    finally:
        await listener.close()


@pytest.mark.timeout(180)
async def test_several_moves_in_a_row_leave_nothing_behind(browser: Browser, api: Api) -> None:
    """Close the BUNDLE tag, push into its slot, again and again: a track pushed before the
    first move and one pushed by the last are heard, the session keeps one connection, and
    once everything is closed no connection, task or thread is left."""
    sfu = browser.sfu
    tasks_before = len(media_tasks())
    sockets_before = udp_sockets()
    threads_before = threading.active_count()
    await moves_in_a_row(browser, api)  # its locals are gone when it returns
    await browser.js("sfu.sessions.pub.pc.close();")
    for session in sfu.registry.sessions:
        await sfu.registry.discard(session)
    del session
    deadline = time.monotonic() + 10
    while live_connections() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert live_connections() == []
    assert udp_sockets() <= sockets_before
    leftover = [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    assert len(leftover) <= threads_before, leftover
    assert len(media_tasks()) <= tasks_before, media_tasks()


def udp_sockets() -> int:
    """UDP sockets this process holds open (ICE binds one per connection it gathers on)."""
    inodes = set()
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        with open(table) as rows:
            inodes |= {row.split()[9] for row in list(rows)[1:]}
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)


def media_tasks() -> list[str]:
    """The loop's tasks, but for the HTTP connections Chromium keeps alive to both servers."""
    names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
    return [n for n in names if n != "RequestHandler.start"]


async def retired(connection: RTCPeerConnection, timeout_s: float = 10.0) -> None:
    """Until the SFU closed `connection`, the one its session moved away from."""
    deadline = time.monotonic() + timeout_s
    while connection.connectionState != "closed":
        assert time.monotonic() < deadline, connection.connectionState
        await asyncio.sleep(0.05)


async def moves_in_a_row(browser: Browser, api: Api, rounds: int = 3) -> None:
    session_id = await browser.open("pub")
    first, _ = await browser.push_tones("pub", {"first": 330, "kept": 550})
    listener = Client(api, tap=True)
    try:
        await listener.open()
        [kept] = [t["mid"] for t in (await aiortc_pull(listener, [(session_id, "kept")]))["tracks"]]
        await wait_packets(listener, kept, 50)
        session = browser.sfu.registry.get(session_id)
        tag, name = first, "first"
        for round_ in range(rounds):  # two moves each
            before = session.pc
            closed = await browser.close("pub", [tag])
            assert closed.status == 200, closed.body
            assert session.pc is not before
            await retired(before)
            before = session.pc
            name = f"pushed-{round_}"
            [tag] = await browser.push_tones("pub", {name: 770})
            assert await browser.bundle_tag("pub") == tag
            assert session.pc is not before
            print(f"round {round_}: close in {closed.renegotiation_s * 1000:.0f} ms, tag now {tag}")
        del before
        assert session.state is SessionState.CONNECTED

        assert abs(await tone_frequency(listener, kept, time.monotonic()) - 550) < 10
        [last] = [t["mid"] for t in (await aiortc_pull(listener, [(session_id, name)]))["tracks"]]
        assert abs(await tone_frequency(listener, last, time.monotonic()) - 770) < 10
        await browser.assert_loopback_pair("pub")

        # Each retired connection is closed once its successor connected: the SFU holds one
        # per session (the listener's own client connection is the third one here).
        deadline = time.monotonic() + 10
        while len(live_connections()) > 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(live_connections()) == 3
    finally:
        await listener.close()


@pytest.mark.timeout(120)
async def test_datachannels_follow_a_move(browser: Browser, api: Api) -> None:
    """Chrome restarts its SCTP association on the moved transport and keeps its channels
    open; the SFU opens its side again, and messages are relayed both ways as before."""
    session_id = await browser.open("pub")
    a, _ = await browser.push_tones("pub", {"A": 440, "B": 660})
    await browser.js("await sfu.sessions.pub.establish();")
    [chat] = (
        await api.ok(
            "POST",
            f"/sessions/{session_id}/datachannels/new",
            {"dataChannels": [{"location": "local", "dataChannelName": "chat"}]},
        )
    )["dataChannels"]
    await browser.js("await sfu.sessions.pub.openChannel('chat', arg);", chat["id"])
    news, listener = Client(api), Client(api)
    try:
        await news.open()
        await establish_by_sfu_offer(news)
        [published] = (
            await api.ok(
                "POST",
                f"/sessions/{news.session_id}/datachannels/new",
                {"dataChannels": [{"location": "local", "dataChannelName": "news"}]},
            )
        )["dataChannels"]
        news_channel = await open_channel(news, "news", published["id"])
        [pulled] = (
            await api.ok(
                "POST",
                f"/sessions/{session_id}/datachannels/new",
                {
                    "dataChannels": [
                        {
                            "location": "remote",
                            "sessionId": news.session_id,
                            "dataChannelName": "news",
                        }
                    ]
                },
            )
        )["dataChannels"]
        await browser.js("await sfu.sessions.pub.openChannel('news', arg);", pulled["id"])
        await listener.open()
        await establish_by_sfu_offer(listener)
        [relayed] = (
            await api.ok(
                "POST",
                f"/sessions/{listener.session_id}/datachannels/new",
                {
                    "dataChannels": [
                        {"location": "remote", "sessionId": session_id, "dataChannelName": "chat"}
                    ]
                },
            )
        )["dataChannels"]
        chat_copy = await open_channel(listener, "chat", relayed["id"])
        heard: asyncio.Queue[str] = asyncio.Queue()
        chat_copy.on("message", heard.put_nowait)

        async def both_ways(word: str) -> None:
            await browser.js("sfu.sessions.pub.channels.get('chat').send(arg);", f"chat {word}")
            assert await asyncio.wait_for(heard.get(), 5) == f"chat {word}"
            news_channel.send(f"news {word}")
            deadline = time.monotonic() + 5
            while f"news {word}" not in await browser.js(
                "return sfu.sessions.pub.received.get('news');"
            ):
                assert time.monotonic() < deadline, f"news {word} never reached the page"
                await asyncio.sleep(0.05)

        await both_ways("before")
        session = browser.sfu.registry.get(session_id)
        connection = session.pc
        closed = await browser.close("pub", [a])
        assert closed.status == 200, closed.body
        assert session.pc is not connection
        await both_ways("after")
        state = await browser.state("pub")
        assert {c["dataChannelName"]: c["status"] for c in state["dataChannels"]} == {
            "server-events": "active",
            "chat": "active",
            "news": "active",
        }
        notes = "return sfu.sessions.pub.log.filter((l) => typeof l === 'string');"
        assert await browser.js(notes) == []  # no datachannel closed, nothing failed to play
        await browser.assert_loopback_pair("pub")
    finally:
        await asyncio.gather(news.close(), listener.close())
