"""Bridges and plain participants in rooms on the local SFU; audio checked by FFT."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from media.bridge import Bridge
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory, MemberKind, TrackInfo
from tests.support.bridges import bridge_in, record, speaking
from tests.support.opus_source import OpusReplayTrack, encode_tone
from tests.support.rtc import Client
from tests.support.signals import band_level_db, collect_pcm, dominant_frequency

PRESENT_DB = -45.0
ABSENT_DB = -70.0


@pytest.fixture
async def client(sfu):
    async with RealtimeClient(
        sfu.base_url,
        sfu.app_id,
        sfu.app_secret,
    ) as realtime:
        yield realtime


@pytest.fixture
def directory():
    return InMemoryDirectory()


async def plain_participant(api, directory, room: str, member: str, frequency_hz: float) -> Client:
    client = Client(api)
    await client.open()
    await client.push(OpusReplayTrack(encode_tone(frequency_hz, 50)), "mic")
    await directory.join(room, member, MemberKind.WEB, member)
    await directory.publish(room, member, TrackInfo(client.session_id, "mic", member))
    return client


async def heard(bridge: Bridge, expected: dict[float, bool], within_s: float = 6.0) -> float:
    """Seconds until the output has each tone present (True) or absent (False)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    levels: dict[float, float] = {}
    while loop.time() - started < within_s:
        pcm = await record(bridge, 0.2)
        levels = {f: band_level_db(pcm, f) for f in expected}
        if all(
            (levels[f] > PRESENT_DB) == want and (want or levels[f] < ABSENT_DB)
            for f, want in expected.items()
        ):
            return loop.time() - started
    raise AssertionError(f"expected {expected}, levels {levels}")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_every_output_has_every_other_tone_and_not_its_own(api, client, directory):
    tones = {"b1": 300.0, "b2": 500.0, "b3": 700.0}
    async with contextlib.AsyncExitStack() as stack:
        bridges = {}
        for name, tone in tones.items():
            bridges[name] = await stack.enter_async_context(
                bridge_in("lobby", client, directory, name)
            )
            await stack.enter_async_context(speaking(bridges[name], f"{name}-spk", tone))
        web1 = await plain_participant(api, directory, "lobby", "web1", 900.0)
        web2 = await plain_participant(api, directory, "lobby", "web2", 1100.0)
        stack.push_async_callback(web1.close)
        stack.push_async_callback(web2.close)
        everyone = {**tones, "web1": 900.0, "web2": 1100.0}
        for name, bridge in bridges.items():
            expected = {tone: other != name for other, tone in everyone.items()}
            await heard(bridge, expected)
        # The plain participants hear each bridge's speaker too, one pulled track at a time.
        members = {m.member_id: m for m in await directory.members("lobby")}
        for name, tone in tones.items():
            track = members[name].tracks[0]
            await web1.pull([(track.session_id, track.track_name)])
            received = await asyncio.wait_for(web1.tracks.get(), 5)
            pcm = await asyncio.wait_for(collect_pcm(received, 0.8), 10)
            assert abs(dominant_frequency(pcm[len(pcm) // 3 :]) - tone) < 5


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_leaver_is_gone_and_late_joiner_heard_within_a_second(client, directory):
    async with bridge_in("lobby", client, directory, "a") as a, speaking(a, "a-spk", 400):
        async with bridge_in("lobby", client, directory, "b") as b, speaking(b, "b-spk", 800):
            await heard(a, {800.0: True, 400.0: False})
            async with bridge_in("lobby", client, directory, "late") as late:
                started = time.monotonic()
                async with speaking(late, "late-spk", 1200):
                    await heard(a, {1200.0: True}, within_s=3.0)
                    assert time.monotonic() - started < 1.0
                    await heard(late, {400.0: True, 800.0: True, 1200.0: False})
            left_at = time.monotonic()
        # b left (its bridge stopped): its tone stops in a's output.
        await heard(a, {800.0: False}, within_s=3.0)
        assert time.monotonic() - left_at < 1.0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_bridge_whose_peer_is_killed_is_heard_again(sfu, client, directory):
    async with (
        bridge_in("lobby", client, directory, "a") as a,
        speaking(a, "a-spk", 450),
        bridge_in("lobby", client, directory, "b") as b,
        speaking(b, "b-spk", 950),
    ):
        await heard(a, {950.0: True})
        await heard(b, {450.0: True})
        old = b.peer.session_id
        await sfu.registry.discard(sfu.registry.get(old))
        await heard(a, {950.0: True}, within_s=5.0)  # b republished; a resubscribed
        await heard(b, {450.0: True}, within_s=5.0)  # b resubscribed on its new session
        assert b.peer.session_id != old


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_two_rooms_stay_isolated(client, directory):
    async with (
        bridge_in("red", client, directory, "r1") as r1,
        speaking(r1, "r1-spk", 350),
        bridge_in("red", client, directory, "r2") as r2,
        speaking(r2, "r2-spk", 650),
        bridge_in("blue", client, directory, "b1") as b1,
        speaking(b1, "b1-spk", 1050),
        bridge_in("blue", client, directory, "b2") as b2,
        speaking(b2, "b2-spk", 1350),
    ):
        await heard(r1, {650.0: True, 1050.0: False, 1350.0: False, 350.0: False})
        await heard(b1, {1350.0: True, 350.0: False, 650.0: False, 1050.0: False})
