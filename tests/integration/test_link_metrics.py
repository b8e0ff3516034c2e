"""/metrics link quality per bridge, from real bridges exchanging a tone through the local SFU:
the figures come from the bridges' own Realtime peers, and appear only where data exists."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import LinkQuality, Metrics, link_quality
from media.bridge import Bridge
from media.peer import PeerState, PeerStats, TrackStats
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory
from tests.support.bridges import bridge_in, record, speaking
from tests.support.signals import band_level_db

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

TONE_HZ = 440.0


@pytest.fixture
async def realtime(sfu) -> AsyncIterator[RealtimeClient]:
    async with RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as client:
        yield client


def samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(metric name, guild label) -> value, for the link quality gauges."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name.startswith("switchboard_link_"):
            for sample in family.samples:
                found[(sample.name, sample.labels["guild"])] = sample.value
    return found


async def test_link_quality_of_each_bridge_on_scrape(realtime) -> None:
    directory = InMemoryDirectory()
    metrics = Metrics()
    async with (
        bridge_in("lobby", realtime, directory, "discord:1:10") as talker,
        bridge_in("lobby", realtime, directory, "discord:2:20") as listener,
        speaking(talker, "dc:1:5", TONE_HZ),
    ):
        bridges: dict[int, Bridge] = {1: talker, 2: listener}

        async def links() -> list[LinkQuality]:
            return [
                link_quality(guild, b.room, await b.peer.stats()) for guild, b in bridges.items()
            ]

        metrics.state.watch_links(links)
        metrics.state.watch_directory(directory)
        # The listener hears the talker's tone: there is something to measure.
        pcm = await record(listener, 2.0)
        assert band_level_db(pcm, TONE_HZ) > -45.0

        deadline = time.monotonic() + 20
        # The talker's round trip needs an SFU receiver report that answers one of its sender
        # reports (about a second apart): wait for it as for the listener's jitter.
        wanted = {("switchboard_link_jitter_seconds", "2"), ("switchboard_link_rtt_seconds", "1")}
        while not wanted <= (found := samples(metrics)).keys():
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.25)
            await metrics.refresh()
        print("link quality:", found)
        # The listener receives the tone over loopback: nothing lost, a little jitter.
        assert 0.0 <= found[("switchboard_link_loss_ratio", "2")] < 0.02
        assert 0.0 <= found[("switchboard_link_jitter_seconds", "2")] < 0.05
        # Only figures that exist are exported: the talker receives no track (it never hears
        # itself), so it has no loss or jitter, but the SFU's receiver reports on what it
        # publishes give a round trip (loopback: well under 50 ms); the listener publishes
        # nothing, so it has no round trip.
        assert {name for name, guild in found if guild == "1"} == {"switchboard_link_rtt_seconds"}
        assert 0.0 < found[("switchboard_link_rtt_seconds", "1")] < 0.05
        assert ("switchboard_link_rtt_seconds", "2") not in found
        assert "switchboard_rooms 1.0" in metrics.render().decode()

        del bridges[2]  # a bridge that stops is dropped from the export
        await metrics.refresh()
        assert {guild for _, guild in samples(metrics)} == {"1"}


def test_link_quality_figures() -> None:
    """Loss over what was expected on received tracks; the worst jitter and round trip."""
    tracks = (
        TrackStats("s1/a", "recv", packets=950, bytes=0, lost=50, jitter_ms=4.0, rtt_ms=None),
        TrackStats("s2/b", "recv", packets=1000, bytes=0, lost=0, jitter_ms=9.0, rtt_ms=None),
        TrackStats("dc:1", "send", packets=500, bytes=0, lost=3, jitter_ms=1.0, rtt_ms=42.0),
    )
    quality = link_quality(7, "lobby", PeerStats("s", PeerState.CONNECTED, 0, tracks))
    assert quality == LinkQuality(7, "lobby", loss_ratio=0.025, jitter_s=0.009, rtt_s=0.042)
    idle = link_quality(7, "lobby", PeerStats("s", PeerState.CONNECTED, 0, ()))
    assert (idle.loss_ratio, idle.jitter_s, idle.rtt_s) == (None, None, None)
