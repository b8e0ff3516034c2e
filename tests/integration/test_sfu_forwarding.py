"""Forwarding is byte-exact and correctly re-headed, at the limits the API allows."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.opus_source import OpusReplayTrack, encode_tone
from tests.support.rtc import Client
from tests.support.waiting import wait_until

RECEIVED_PACKETS = 60
"""Judged per track: 1.2 s of stream, more than twice the 25-packet cycle of each source."""


async def pull_all(client: Client, publisher: str, names: list[str]) -> dict:
    """Pull `names`, re-requesting those whose publisher is not sending yet; every result."""
    done: dict[str, dict] = {}
    for _ in range(100):
        wanted = [n for n in names if n not in done]
        result = await client.api.ok(
            "POST",
            f"/sessions/{client.session_id}/tracks/new",
            {
                "tracks": [
                    {"location": "remote", "sessionId": publisher, "trackName": n} for n in wanted
                ]
            },
        )
        if result.get("requiresImmediateRenegotiation"):
            await client.answer(result["sessionDescription"])
        for track in result["tracks"]:
            if "errorCode" in track:
                assert track["errorCode"] == "not_found_track_error" and track["mid"] == ""
            else:
                done[track["trackName"]] = track
        if len(done) == len(names):
            return {"tracks": [done[n] for n in names]}
        await asyncio.sleep(0.05)
    raise AssertionError("tracks never became available")


def assert_stream_intact(packets, sent: list[bytes]) -> None:
    """Payloads are the publisher's bytes in order; seq and timestamp advance in step."""
    assert len(packets) >= 20
    # An Opus encoder fed a steady tone repeats itself, so the first payload may occur more
    # than once in `sent`: the stream must line up with one of those places.
    payloads = [p.payload for p in packets]
    starts = [i for i, payload in enumerate(sent) if payload == payloads[0]]
    assert starts, "the first payload is not one the publisher sent"
    assert any(
        all(
            payload == sent[(start + offset) % len(sent)] for offset, payload in enumerate(payloads)
        )
        for start in starts
    ), "payloads differ from the publisher's sequence"
    for before, after in itertools.pairwise(packets):
        assert (after.sequence_number - before.sequence_number) & 0xFFFF == 1
        assert (after.timestamp - before.timestamp) & 0xFFFFFFFF == 960
    assert len({p.ssrc for p in packets}) == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sixty_four_tracks_on_one_session_are_byte_exact(api):
    names = [f"t{i}" for i in range(64)]
    sources = [encode_tone(200 + 15 * i, 25) for i in range(64)]
    publisher, subscriber = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await subscriber.open()
        pushed = await publisher.push_many(
            [(OpusReplayTrack(p), n) for p, n in zip(sources, names, strict=True)]
        )
        assert [t["trackName"] for t in pushed["tracks"]] == names
        result = await pull_all(subscriber, publisher.session_id, names)
        mids = {t["trackName"]: t["mid"] for t in result["tracks"]}
        assert len(set(mids.values())) == 64
        await wait_until(
            lambda: all(len(subscriber.received[m]) >= RECEIVED_PACKETS for m in mids.values()),
            timeout_s=30,
            what=f"{RECEIVED_PACKETS} packets on each of the 64 tracks",
        )
        ssrcs = set()
        for name, packets in zip(names, sources, strict=True):
            got = subscriber.received[mids[name]]
            assert_stream_intact(got, packets)
            ssrcs.add(got[0].ssrc)
        assert len(ssrcs) == 64
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_twenty_concurrent_sessions(api):
    sources = [encode_tone(300 + 40 * i, 25) for i in range(10)]

    async def pair(index: int) -> None:
        publisher, subscriber = Client(api), Client(api, tap=True)
        try:
            await publisher.open()
            await subscriber.open()
            await publisher.push(OpusReplayTrack(sources[index]), "mic")
            result = await pull_all(subscriber, publisher.session_id, ["mic"])
            mid = result["tracks"][0]["mid"]
            await wait_until(
                lambda: len(subscriber.received[mid]) >= RECEIVED_PACKETS,
                timeout_s=30,
                what=f"{RECEIVED_PACKETS} packets",
            )
            assert_stream_intact(subscriber.received[result["tracks"][0]["mid"]], sources[index])
        finally:
            await asyncio.gather(publisher.close(), subscriber.close())

    await asyncio.gather(*(pair(i) for i in range(10)))
