"""Closing, re-pulling, session state, collection of idle tracks and sessions, teardown."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from media.sfu import LocalSFU, SfuConfig
from tests.support.opus_source import OpusReplayTrack, encode_tone
from tests.support.rtc import Api, Client
from tests.support.signals import ToneTrack
from tests.support.waiting import wait_until, wait_until_async

from .test_sfu_forwarding import pull_all


async def close_with_offer(client: Client, mid: str) -> dict:
    transceiver = next(t for t in client.pc.getTransceivers() if t.mid == mid)
    transceiver.direction = "inactive"
    await client.pc.setLocalDescription(await client.pc.createOffer())
    result = await client.api.ok(
        "PUT",
        f"/sessions/{client.session_id}/tracks/close",
        {
            "tracks": [{"mid": mid}],
            "sessionDescription": {"type": "offer", "sdp": client.pc.localDescription.sdp},
            "force": False,
        },
    )
    answer = result["sessionDescription"]
    await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return result


def sfu_received(sfu: LocalSFU, session_id: str, track_name: str) -> int:
    """Packets of the track the SFU has taken in: proof that time passed and media flowed."""
    publication = sfu.registry.lookup(session_id, track_name)
    assert publication is not None
    return publication.packets


async def assert_nothing_more(sfu, client: Client, mid: str, publisher: str, track: str) -> None:
    """While the SFU takes in 20 more packets of `track`, at most one more reaches `mid`."""
    count = len(client.received[mid])
    seen = sfu_received(sfu, publisher, track)
    await wait_until(
        lambda: sfu_received(sfu, publisher, track) >= seen + 20, what="20 more packets"
    )
    assert len(client.received[mid]) <= count + 1  # one may be in flight


@pytest.mark.timeout(60)
async def test_close_pulled_track_then_pull_again(sfu, api):
    publisher, subscriber = Client(api), Client(api, tap=True)
    packets = encode_tone(500, 25)
    try:
        await publisher.open()
        await subscriber.open()
        await publisher.push(OpusReplayTrack(packets), "mic")
        first = await pull_all(subscriber, publisher.session_id, ["mic"])
        mid = first["tracks"][0]["mid"]
        await wait_until(lambda: len(subscriber.received[mid]) > 10, what="10 packets")

        closed = await close_with_offer(subscriber, mid)
        assert closed["tracks"] == [{"mid": mid, "trackName": "mic"}]
        # The client kept the m-line (inactive, live port): the answer keeps it open too.
        answered = aiortc_sdp.SessionDescription.parse(closed["sessionDescription"]["sdp"])
        media = next(m for m in answered.media if m.rtp.muxId == mid)
        assert (media.port != 0, media.direction) == (True, "inactive")
        assert mid in answered.group[0].items
        state = await api.ok("GET", f"/sessions/{subscriber.session_id}")
        assert {
            "location": "remote",
            "mid": mid,
            "trackName": "mic",
            "sessionId": publisher.session_id,
            "status": "inactive",
        } in state["tracks"]
        await assert_nothing_more(sfu, subscriber, mid, publisher.session_id, "mic")

        again = await pull_all(subscriber, publisher.session_id, ["mic"])
        new_mid = again["tracks"][0]["mid"]
        assert new_mid != mid
        await wait_until(lambda: len(subscriber.received[new_mid]) > 10, what="10 packets")
        assert {p.payload for p in subscriber.received[new_mid]} <= set(packets)
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


@pytest.mark.timeout(60)
async def test_closing_a_published_track_stops_its_subscribers(api):
    publisher, subscriber = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await subscriber.open()
        pushed = await publisher.push_many(
            [
                (OpusReplayTrack(encode_tone(400, 25)), "a"),
                (OpusReplayTrack(encode_tone(800, 25)), "b"),
            ]
        )
        pulled = await pull_all(subscriber, publisher.session_id, ["a", "b"])
        mids = {t["trackName"]: t["mid"] for t in pulled["tracks"]}
        await wait_until(
            lambda: all(len(subscriber.received[m]) > 10 for m in mids.values()),
            what="both flowing",
        )
        b_mid = next(t["mid"] for t in pushed["tracks"] if t["trackName"] == "b")
        result = await close_with_offer(publisher, b_mid)
        assert result["tracks"] == [{"mid": b_mid, "trackName": "b"}]
        before = {n: len(subscriber.received[m]) for n, m in mids.items()}
        await wait_until(
            lambda: len(subscriber.received[mids["a"]]) > before["a"] + 15, what="15 more of a"
        )
        assert len(subscriber.received[mids["b"]]) <= before["b"] + 1
        state = await api.ok("GET", f"/sessions/{publisher.session_id}")
        status = {t["trackName"]: t["status"] for t in state["tracks"]}
        assert status == {"a": "active", "b": "inactive"}
        retry = await api.ok(
            "POST",
            f"/sessions/{subscriber.session_id}/tracks/new",
            {
                "tracks": [
                    {"location": "remote", "sessionId": publisher.session_id, "trackName": "b"}
                ]
            },
        )
        assert retry["tracks"][0]["errorCode"] == "not_found_track_error"
        assert retry["tracks"][0]["mid"] == ""
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


@pytest.mark.timeout(60)
async def test_force_close_without_sdp_and_unknown_mid(sfu, api):
    publisher, subscriber = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await subscriber.open()
        await publisher.push(OpusReplayTrack(encode_tone(450, 25)), "mic")
        pulled = await pull_all(subscriber, publisher.session_id, ["mic"])
        mid = pulled["tracks"][0]["mid"]
        result = await api.ok(
            "PUT",
            f"/sessions/{subscriber.session_id}/tracks/close",
            {"tracks": [{"mid": mid}, {"mid": "99"}], "force": True},
        )
        assert result["tracks"][0] == {"mid": mid, "trackName": "mic"}
        assert result["tracks"][1]["errorCode"] == "close_track_error"
        assert "sessionDescription" not in result
        await assert_nothing_more(sfu, subscriber, mid, publisher.session_id, "mic")
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


async def establish_with_offer(client: Client) -> dict:
    client.pc.createDataChannel("bootstrap")
    await client.pc.setLocalDescription(await client.pc.createOffer())
    result = await client.api.ok(
        "POST",
        f"/sessions/{client.session_id}/datachannels/establish",
        {
            "dataChannel": {"location": "remote", "dataChannelName": "server-events"},
            "sessionDescription": {"type": "offer", "sdp": client.pc.localDescription.sdp},
        },
    )
    assert result["requiresImmediateRenegotiation"] is False
    answer = result["sessionDescription"]
    await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return result


async def establish_by_sfu_offer(client: Client) -> dict:
    result = await client.api.ok(
        "POST",
        f"/sessions/{client.session_id}/datachannels/establish",
        {"dataChannel": {"location": "remote", "dataChannelName": "server-events"}},
    )
    assert result["requiresImmediateRenegotiation"] is True
    assert "m=application" in result["sessionDescription"]["sdp"]
    await client.answer(result["sessionDescription"])
    return result


async def open_channel(client: Client, name: str, channel_id: int):
    channel = client.pc.createDataChannel(name, negotiated=True, id=channel_id)
    await wait_until(lambda: channel.readyState == "open", what=f"datachannel {name} open")
    return channel


@pytest.mark.timeout(60)
async def test_datachannel_messages_are_relayed(api):
    publisher, subscriber = Client(api), Client(api)
    try:
        await publisher.open()
        await subscriber.open()
        established = await establish_with_offer(publisher)
        assert established["dataChannel"]["dataChannelName"] == "server-events"
        await establish_by_sfu_offer(subscriber)
        local = await api.ok(
            "POST",
            f"/sessions/{publisher.session_id}/datachannels/new",
            {"dataChannels": [{"location": "local", "dataChannelName": "chat"}]},
        )
        remote = await api.ok(
            "POST",
            f"/sessions/{subscriber.session_id}/datachannels/new",
            {
                "dataChannels": [
                    {
                        "location": "remote",
                        "sessionId": publisher.session_id,
                        "dataChannelName": "chat",
                    }
                ]
            },
        )
        missing = await api.ok(
            "POST",
            f"/sessions/{subscriber.session_id}/datachannels/new",
            {
                "dataChannels": [
                    {
                        "location": "remote",
                        "sessionId": publisher.session_id,
                        "dataChannelName": "nope",
                    }
                ]
            },
        )
        assert "errorCode" in missing["dataChannels"][0]
        send = await open_channel(publisher, "chat", local["dataChannels"][0]["id"])
        recv_id = remote["dataChannels"][0]["id"]
        recv = await open_channel(subscriber, "chat", recv_id)
        got: asyncio.Queue[str] = asyncio.Queue()
        recv.on("message", got.put_nowait)
        send.send("hello room")
        assert await asyncio.wait_for(got.get(), 5) == "hello room"
        state = await api.ok("GET", f"/sessions/{subscriber.session_id}")
        chat = next(c for c in state["dataChannels"] if c["dataChannelName"] == "chat")
        assert chat == {
            "location": "remote",
            "dataChannelName": "chat",
            "id": recv_id,
            "status": "active",
            "sessionId": publisher.session_id,
        }
        closed = await api.ok(
            "PUT",
            f"/sessions/{subscriber.session_id}/datachannels/close",
            {"dataChannels": [{"id": recv_id}, {"id": 999}]},
        )
        assert "errorCode" not in closed["dataChannels"][0]
        assert closed["dataChannels"][1]["errorCode"] == "close_datachannel_error"
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


@pytest.mark.timeout(60)
async def test_idle_track_is_collected_and_gone_session_answers_410():
    async with LocalSFU(SfuConfig(track_idle_s=1.0, session_reuse_s=1.0)) as sfu:
        api = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
        publisher = Client(api)
        track = ToneTrack(300)
        try:
            await publisher.open()
            await publisher.push(track, "mic")
            await publisher.wait_sending("mic")
            track.stop()  # the sender stops; the SFU sees no packets

            async def inactive() -> bool:
                state = await api.ok("GET", f"/sessions/{publisher.session_id}")
                return state["tracks"][0]["status"] == "inactive"

            await wait_until_async(inactive, what="the idle track inactive")
            await publisher.close()

            async def gone() -> bool:
                response = await api.call("GET", f"/sessions/{publisher.session_id}")
                return response.status_code == 410

            await wait_until_async(gone, what="410 for the closed session")
            response = await api.call("GET", f"/sessions/{publisher.session_id}")
            assert response.json()["errorCode"] == "session_error"
        finally:
            await publisher.close()
            await api.aclose()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_two_hundred_cycles_leave_nothing_behind():
    async with LocalSFU(SfuConfig(session_reuse_s=0.2)) as sfu:
        api = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
        tasks_before = len(asyncio.all_tasks())
        threads_before = threading.active_count()
        packets = encode_tone(440, 5)

        async def cycle() -> None:
            client = Client(api)
            await client.open()
            await client.push(OpusReplayTrack(packets), "mic")

            def sending() -> bool:
                publication = sfu.registry.lookup(client.session_id, "mic")
                return publication is not None and publication.is_sending

            await wait_until(sending, what="the publication sending")
            await client.close()

        for _ in range(20):
            await asyncio.gather(*(cycle() for _ in range(10)))

        async def reaped() -> bool:
            await sfu.registry.reap()
            return len(sfu.registry) == 0

        await wait_until_async(reaped, what="every session reaped")
        await api.aclose()  # lets the server's keep-alive handlers finish

        def peers() -> list[RTCPeerConnection]:
            gc.collect()
            return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]

        def threads() -> list[str]:
            return [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]

        def settled() -> bool:
            return (
                not peers()
                and len(threads()) <= threads_before
                and (len(asyncio.all_tasks()) <= tasks_before)
            )

        try:
            await wait_until(settled, what="everything released")
        except AssertionError:
            leftover_tasks = [t.get_coro() for t in asyncio.all_tasks()]
            left = f"{peers()=} {threads()=} {leftover_tasks=}"
            raise AssertionError(f"left behind: {left}") from None
