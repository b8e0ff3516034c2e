"""RealtimePeer against the local SFU: real aiortc peers, real RTP, real recovery."""

from __future__ import annotations

import asyncio

import pytest

from media.audio.inbound import InboundOpus
from media.audio.source import OpusSource
from media.backoff import Backoff
from media.peer import PeerConfig, PeerUnavailable, RealtimePeer
from media.realtime import NOT_FOUND_TRACK_ERROR, RealtimeClient, RealtimeItemError
from tests.support.feeding import drain, feeding, receive_pcm
from tests.support.signals import dominant_frequency, rms_dbfs
from tests.support.waiting import wait_until

FAST = PeerConfig(recovery=Backoff(initial_s=0.05, max_s=0.5))


@pytest.fixture
async def client(sfu):
    async with RealtimeClient(
        sfu.base_url,
        sfu.app_id,
        sfu.app_secret,
    ) as realtime:
        yield realtime


@pytest.fixture
async def peers(client):
    made: list[RealtimePeer] = []

    async def make() -> RealtimePeer:
        peer = RealtimePeer(client, FAST)
        await peer.start()
        made.append(peer)
        return peer

    yield make
    await asyncio.gather(*(p.close() for p in made))


async def pulled(
    peer: RealtimePeer, session_id: str, track: str, within_s: float = 10
) -> InboundOpus:
    """Pull until live, as the room reconciler would: a publisher's first packets may not have
    reached the SFU yet (not_found_track_error), or the peer may be rebuilding."""
    inbound = peer.inbound(session_id, track)
    async with asyncio.timeout(within_s):
        while (await peer.pull([inbound])).get(inbound) is not None:
            await asyncio.sleep(0.05)
    assert peer.is_live(inbound)
    return inbound


async def assert_tone(inbound, frequency_hz: float, seconds: float = 1.0) -> None:
    pcm = await asyncio.wait_for(receive_pcm(inbound, seconds), seconds + 5)
    steady = pcm[len(pcm) // 4 :]
    assert abs(dominant_frequency(steady) - frequency_hz) < 5
    assert rms_dbfs(steady) > -20


@pytest.mark.timeout(30)
async def test_tone_published_is_heard_by_subscriber(peers):
    publisher, subscriber = await peers(), await peers()
    source = OpusSource("mic")
    async with feeding(source, 440):
        await publisher.publish("mic", source)
        inbound = await pulled(subscriber, publisher.session_id, "mic")
        await assert_tone(inbound, 440)
        stats = await subscriber.stats()
        recv = next(t for t in stats.tracks if t.direction == "recv")
        assert recv.packets >= 50 and recv.lost == 0


@pytest.mark.timeout(30)
async def test_pull_before_publisher_sends_fails_once_then_succeeds(peers):
    publisher, subscriber = await peers(), await peers()
    source = OpusSource("mic")
    await publisher.publish("mic", source)  # published, but nothing sent yet
    inbound = subscriber.inbound(publisher.session_id, "mic")
    started = asyncio.get_running_loop().time()
    failures = await subscriber.pull([inbound])
    # One attempt, no retry hidden under a lock: the answer comes at once.
    assert asyncio.get_running_loop().time() - started < 1.0
    error = failures[inbound]
    assert isinstance(error, RealtimeItemError) and error.error_code == NOT_FOUND_TRACK_ERROR
    assert not subscriber.is_live(inbound)
    with pytest.raises(RealtimeItemError):
        await subscriber.subscribe(publisher.session_id, "mic")
    async with feeding(source, 523):
        again = await pulled(subscriber, publisher.session_id, "mic")
        assert again is inbound
        await assert_tone(inbound, 523)


@pytest.mark.timeout(30)
async def test_pull_is_idempotent_one_mid_per_track(sfu, peers):
    publisher, subscriber = await peers(), await peers()
    source = OpusSource("mic")
    async with feeding(source, 440):
        await publisher.publish("mic", source)
        inbound = await pulled(subscriber, publisher.session_id, "mic")
        results = await asyncio.gather(*(subscriber.pull([inbound]) for _ in range(5)))
        assert results == [{}] * 5
        pulls = [
            t
            for t in sfu.registry.get(subscriber.session_id).pc.getTransceivers()
            if t.direction in ("sendonly", "sendrecv")
        ]
        assert len(pulls) == 1
        await assert_tone(inbound, 440, 0.5)


async def wait_for_audio_again(inbound, within_s: float) -> float:
    loop = asyncio.get_running_loop()
    await drain(inbound)
    started = loop.time()
    got = 0
    while loop.time() - started < within_s:
        while inbound.poll() is not None:
            got += 1
        if got >= 5:
            return loop.time() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"no audio within {within_s} s")


@pytest.mark.timeout(40)
async def test_session_killed_by_sfu_recovers_without_resubscribing(sfu, peers):
    publisher, subscriber = await peers(), await peers()
    source = OpusSource("mic")
    async with feeding(source, 440):
        await publisher.publish("mic", source)
        inbound = await pulled(subscriber, publisher.session_id, "mic")
        await assert_tone(inbound, 440, 0.5)
        old = subscriber.session_id
        await sfu.registry.discard(sfu.registry.get(old))
        await wait_for_audio_again(inbound, 2.0)
        assert subscriber.session_id != old
        assert subscriber.recoveries == 1
        await assert_tone(inbound, 440, 0.5)


@pytest.mark.timeout(40)
async def test_dropped_connection_recovers_without_resubscribing(sfu, peers):
    publisher, subscriber = await peers(), await peers()
    source = OpusSource("mic")
    async with feeding(source, 440):
        await publisher.publish("mic", source)
        inbound = await pulled(subscriber, publisher.session_id, "mic")
        await assert_tone(inbound, 440, 0.5)
        # The connection drops while the session itself stays known to the SFU.
        await sfu.registry.get(subscriber.session_id).pc.close()
        await wait_for_audio_again(inbound, 2.0)
        await assert_tone(inbound, 440, 0.5)


@pytest.mark.timeout(40)
async def test_gone_session_410_rebuilds_on_next_call(sfu, peers):
    publisher, subscriber = await peers(), await peers()
    first, second = OpusSource("a"), OpusSource("b")
    async with feeding(first, 440), feeding(second, 880):
        await publisher.publish("a", first)
        await publisher.publish("b", second)
        inbound_a = await pulled(subscriber, publisher.session_id, "a")
        await assert_tone(inbound_a, 440, 0.4)
        # Cloudflare forgot the session: the next call answers 410 session_error.
        session = sfu.registry.get(subscriber.session_id)
        sfu.registry._sessions.pop(session.id)
        inbound_b = subscriber.inbound(publisher.session_id, "b")
        failures = await subscriber.pull([inbound_b])
        assert isinstance(failures[inbound_b], PeerUnavailable)
        inbound_b = await pulled(subscriber, publisher.session_id, "b")
        assert subscriber.recoveries == 1
        await assert_tone(inbound_b, 880, 0.5)
        await wait_for_audio_again(inbound_a, 2.0)
        await session.close()


@pytest.mark.timeout(60)
async def test_concurrent_publish_and_subscribe_never_overlap(peers):
    publisher, subscriber = await peers(), await peers()
    sources = [OpusSource(f"s{i}") for i in range(8)]
    async with contextlib_feeding(sources):
        await asyncio.gather(*(publisher.publish(s.name, s) for s in sources))
        inbounds = await asyncio.gather(
            *(pulled(subscriber, publisher.session_id, s.name) for s in sources),
            *(subscriber.publish(f"back{i}", OpusSource()) for i in range(4)),
        )
        for index, inbound in enumerate(inbounds[:8]):
            await assert_tone(inbound, 300 + 60 * index, 0.5)


def contextlib_feeding(sources):
    import contextlib

    stack = contextlib.AsyncExitStack()

    class _All:
        async def __aenter__(self):
            for index, source in enumerate(sources):
                await stack.enter_async_context(feeding(source, 300 + 60 * index))

        async def __aexit__(self, *exc):
            await stack.aclose()

    return _All()


@pytest.mark.timeout(40)
async def test_unpublish_then_publish_reuses_the_transceiver(peers):
    publisher, subscriber = await peers(), await peers()
    first, second = OpusSource("one"), OpusSource("two")
    async with feeding(first, 440), feeding(second, 660):
        await publisher.publish("one", first)
        inbound = await pulled(subscriber, publisher.session_id, "one")
        await assert_tone(inbound, 440, 0.4)
        lines = len(publisher._pc.getTransceivers())
        await publisher.unpublish("one")
        await subscriber.unsubscribe(inbound)
        # Let the sender loop take one more packet of "one" and then wait on the idle track
        # that unpublish installed (the state in which a reused sender used to stay silent).
        pushed = first.pushed
        await wait_until(lambda: first.pushed >= pushed + 3, what="two more packets of 'one'")
        await publisher.publish("two", second)
        assert len(publisher._pc.getTransceivers()) == lines
        again = await pulled(subscriber, publisher.session_id, "two")
        await assert_tone(again, 660, 0.5)


@pytest.mark.timeout(40)
async def test_a_silent_track_unpublished_leaves_its_transceiver_usable(peers):
    # A speaker who stopped talking and then left: the sender loop is waiting for a packet of
    # that source that will never come when the transceiver is reused for someone else.
    publisher, subscriber = await peers(), await peers()
    first, second = OpusSource("one"), OpusSource("two")
    async with feeding(first, 440):
        await publisher.publish("one", first)
        inbound = await pulled(subscriber, publisher.session_id, "one")
        await assert_tone(inbound, 440, 0.4)
    await wait_until(lambda: first.queued == 0, what="every packet of 'one' sent")
    await publisher.unpublish("one")
    await subscriber.unsubscribe(inbound)
    async with feeding(second, 660):
        await publisher.publish("two", second)
        again = await pulled(subscriber, publisher.session_id, "two")
        await assert_tone(again, 660, 0.5)
