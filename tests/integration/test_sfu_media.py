"""Real aiortc peers exchanging real RTP through the local SFU on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.rtc import Client
from tests.support.signals import ToneTrack, collect_pcm, dominant_frequency, rms_dbfs


async def pull_when_sending(client: Client, publisher: str, name: str, attempts: int = 100):
    for _ in range(attempts):
        result = await client.pull([(publisher, name)])
        if "errorCode" not in result["tracks"][0]:
            return result
        assert result["tracks"][0]["errorCode"] == "not_found_track_error"
        assert result["tracks"][0]["mid"] == ""
        await asyncio.sleep(0.05)
    raise AssertionError("publisher never started sending")


@pytest.mark.timeout(30)
async def test_tone_reaches_subscriber(api):
    publisher, subscriber = Client(api), Client(api)
    try:
        await publisher.open()
        await subscriber.open()
        pushed = await publisher.push(ToneTrack(440), "mic")
        assert pushed["tracks"] == [{"trackName": "mic", "mid": pushed["tracks"][0]["mid"]}]
        assert pushed["requiresImmediateRenegotiation"] is False
        result = await pull_when_sending(subscriber, publisher.session_id, "mic")
        assert result["requiresImmediateRenegotiation"] is True
        track = await asyncio.wait_for(subscriber.tracks.get(), 5)
        pcm = await asyncio.wait_for(collect_pcm(track, 1.5), 10)
        steady = pcm[len(pcm) // 3 :]
        assert abs(dominant_frequency(steady) - 440) < 5
        assert rms_dbfs(steady) > -20
    finally:
        await publisher.close()
        await subscriber.close()


@pytest.mark.timeout(40)
async def test_one_publisher_five_subscribers(api):
    publisher = Client(api)
    subscribers = [Client(api) for _ in range(5)]
    try:
        await publisher.open()
        await publisher.push(ToneTrack(660), "mic")
        for subscriber in subscribers:
            await subscriber.open()
            await pull_when_sending(subscriber, publisher.session_id, "mic")
        tracks = [await asyncio.wait_for(s.tracks.get(), 5) for s in subscribers]
        received = await asyncio.wait_for(
            asyncio.gather(*(collect_pcm(t, 1.2) for t in tracks)), 15
        )
        for pcm in received:
            steady = pcm[len(pcm) // 3 :]
            assert abs(dominant_frequency(steady) - 660) < 5
            assert rms_dbfs(steady) > -20
    finally:
        await asyncio.gather(publisher.close(), *(s.close() for s in subscribers))
