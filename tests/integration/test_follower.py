"""The room reconciler (`RoomFollower`, through `Bridge`) against the local SFU: waiting
subscriptions across a recovery, a dropped event stream, and publishes that never queue
behind a pull that is still waiting for its publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from media import rooms
from media.audio.source import OpusSource
from media.bridge import Bridge
from media.peer import RealtimePeer
from media.realtime import RealtimeClient, TrackLocator
from media.rooms import InMemoryDirectory, MemberKind, TrackInfo
from tests.support.bridges import FAST_PEER, bridge_in, record, speaking
from tests.support.feeding import feeding
from tests.support.signals import band_level_db

PRESENT_DB = -45.0


@pytest.fixture
async def client(sfu):
    async with RealtimeClient(sfu.base_url, sfu.app_id, sfu.app_secret) as realtime:
        yield realtime


@pytest.fixture
def directory():
    return InMemoryDirectory()


@contextlib.asynccontextmanager
async def plain_publisher(
    client, directory, room: str, member: str, track: str
) -> AsyncIterator[tuple[RealtimePeer, OpusSource]]:
    """A member whose track is announced in the room but sends nothing until fed."""
    peer = RealtimePeer(client, FAST_PEER)
    await peer.start()
    source = OpusSource(track)
    await peer.publish(track, source)
    await directory.join(room, member, MemberKind.OTHER, member)
    await directory.publish(room, member, TrackInfo(peer.session_id, track, member))
    try:
        yield peer, source
    finally:
        await directory.leave(room, member)
        await peer.close()


async def until_heard(bridge: Bridge, frequency_hz: float, within_s: float) -> float:
    """Seconds until 100 ms in a row of `frequency_hz` come out of the bridge."""
    started = time.monotonic()
    run = 0
    async with asyncio.timeout(within_s):
        async for frame in bridge.frames():
            run = run + 1 if band_level_db(frame, frequency_hz) > PRESENT_DB else 0
            if run >= 5:
                return time.monotonic() - started
    raise AssertionError("unreachable")


def tone_purity(pcm: np.ndarray, frequency_hz: float) -> float:
    """Share of the signal's power within ±20 Hz of `frequency_hz` (1.0: a clean tone)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
    band = spectrum[np.abs(freqs - frequency_hz) <= 20].sum()
    return float(band / spectrum[freqs > 20].sum())


def pulls_on_sfu(sfu, session_id: str) -> int:
    return sum(
        1 for p in sfu.registry.get(session_id).pc.getTransceivers() if p.direction == "sendonly"
    )


@pytest.mark.timeout(60)
async def test_waiting_subscription_across_a_recovery_is_pulled_once_and_clean(
    sfu, client, directory, caplog
):
    caplog.set_level(logging.INFO)
    async with (
        bridge_in("r", client, directory, "listener") as listener,
        plain_publisher(client, directory, "r", "pub", "tone") as (publisher, source),
    ):
        locator = TrackLocator(publisher.session_id, "tone")
        # The publisher sends nothing yet: the reconciler keeps retrying the pull.
        async with asyncio.timeout(10):
            while listener.follower.stats.pull_failures < 2:
                await asyncio.sleep(0.02)
        old = listener.peer.session_id
        await sfu.registry.discard(sfu.registry.get(old))
        async with asyncio.timeout(10):
            while listener.peer.recoveries < 1:
                await asyncio.sleep(0.02)
        async with feeding(source, 1000):
            await until_heard(listener, 1000, 10)
            pcm = await record(listener, 1.0)
        assert listener.peer.recoveries == 1
        # Exactly one subscription: one live mid on the peer, one forwarding sender on the SFU.
        assert list(listener.peer._mid_of) == [locator]
        assert pulls_on_sfu(sfu, listener.peer.session_id) == 1
        assert tone_purity(pcm, 1000) > 0.95
        jumps = [r for r in caplog.records if "timestamp jump" in r.getMessage()]
        assert jumps == []


@pytest.mark.timeout(60)
async def test_a_dropped_event_stream_resyncs_and_hears_the_next_member(
    client, directory, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING, logger="media.follower")
    async with bridge_in("r", client, directory, "listener") as listener:
        # The directory drops a subscriber that falls behind; make the next event do that.
        monkeypatch.setattr(rooms, "EVENT_QUEUE_LIMIT", 0)
        await directory.join("r", "someone", MemberKind.OTHER, "someone")
        monkeypatch.undo()
        async with asyncio.timeout(10):
            while listener.follower.stats.resyncs < 1:
                await asyncio.sleep(0.02)
        assert any("room event stream ended" in r.getMessage() for r in caplog.records)
        async with bridge_in("r", client, directory, "late") as late, speaking(late, "t", 700):
            await until_heard(listener, 700, 10)


@pytest.mark.timeout(60)
async def test_a_publish_does_not_wait_behind_a_pull_that_waits_for_its_publisher(
    client, directory
):
    async with (
        bridge_in("r", client, directory, "b") as bridge,
        plain_publisher(client, directory, "r", "pub", "silent"),
    ):
        async with asyncio.timeout(10):
            while bridge.follower.stats.pull_failures < 1:
                await asyncio.sleep(0.02)
        started = time.monotonic()
        async with speaking(bridge, "speaker", 440):
            async with asyncio.timeout(5):
                while True:
                    members = await directory.members("r")
                    mine = next(m for m in members if m.member_id == "b")
                    if any(t.track_name == "speaker" for t in mine.tracks):
                        break
                    await asyncio.sleep(0.01)
        published_after = time.monotonic() - started
        # The pull keeps failing (nobody feeds it) and is retried outside every lock.
        assert bridge.follower.stats.pull_failures >= 1
        assert published_after < 2.0, published_after


@pytest.mark.timeout(60)
async def test_a_leaving_speaker_costs_the_others_no_gap(client, directory):
    async with (
        bridge_in("r", client, directory, "a") as talker,
        bridge_in("r", client, directory, "b") as listener,
    ):
        async with speaking(talker, "first", 500):
            await until_heard(listener, 500, 10)
            async with speaking(talker, "second", 900):
                await until_heard(listener, 900, 10)
                # "first" holds the first m-line: the BUNDLE tag of the talker's connection.
                collect = asyncio.create_task(record(listener, 2.0))
                await asyncio.sleep(0.3)
                await talker.remove_speaker("first")
                pcm = await collect
        frames = pcm.reshape(-1, 960)
        present = [band_level_db(f, 900) > PRESENT_DB for f in frames]
        longest_gap = max(
            (len(run) for run in "".join("x" if p else " " for p in present).split("x")), default=0
        )
        assert longest_gap * 20 <= 100, f"{longest_gap * 20} ms without the other speaker"
        assert talker.peer.recoveries == 0 and listener.peer.recoveries == 0


class _UnreachableAtFirst(InMemoryDirectory):
    """A shared directory that refuses the first changes (Redis restarting, say)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, room: str, member_id: str, track: TrackInfo) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("directory unreachable")
        await super().publish(room, member_id, track)


@pytest.mark.timeout(60)
async def test_an_announcement_the_directory_refused_is_made_again(client):
    directory = _UnreachableAtFirst(failures=3)
    async with (
        bridge_in("r", client, directory, "talker") as talker,
        bridge_in("r", client, directory, "listener") as listener,
        speaking(talker, "voice", 800),
    ):
        await until_heard(listener, 800, 10)
    assert directory.failures == 0
