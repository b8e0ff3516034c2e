"""The web participants' HTTP API and events socket against the local SFU, with aiortc peers
standing in for browsers: the happy path end to end, and every refusal with its JSON shape."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bot.config import load_settings
from bot.web import (
    CREDENTIAL_TTL_S,
    IceServerSource,
    KeyedBuckets,
    RateSpec,
    Role,
    TokenBucket,
    TokenSigner,
    WebApi,
)
from bot.web import participants as participants_module
from media.realtime import RealtimeClient, TurnClient
from media.rooms import InMemoryDirectory, MemberKind, TrackInfo
from media.sfu import LocalSFU
from tests.support.signals import ToneTrack, collect_pcm, dominant_frequency

SECRET = "integration-test-secret-" + "x" * 24
ROOMS = {"lobby", "other"}


# -- the world -------------------------------------------------------------------------------------


@dataclass
class World:
    sfu: LocalSFU
    directory: InMemoryDirectory
    web: WebApi
    client: TestClient
    signer: TokenSigner

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.client.server.port}"

    def invite(self, room: str = "lobby", role: Role = Role.SPEAKER, ttl_s: int = 3600) -> str:
        return self.signer.issue_invite(room, role, ttl_s)[0]

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        credential: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        sent = dict(headers or {})
        if credential is not None:
            sent["Authorization"] = f"Bearer {credential}"
        response = await self.client.post(path, json=body if body is not None else {}, headers=sent)
        assert response.content_type == "application/json", await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()

    async def join(
        self, room: str = "lobby", role: Role = Role.SPEAKER, name: str = "Ada"
    ) -> Joined:
        status, body = await self.post(
            f"/api/rooms/{room}/join", {"token": self.invite(room, role), "name": name}
        )
        assert status == 200, body
        return Joined(self, body["participantId"], body["credential"], body)

    async def events(self, joined: Joined, *, origin: str | None = None):
        socket = await self.client.ws_connect(
            f"/api/participants/{joined.id}/events", headers={"Origin": origin or self.origin}
        )
        await socket.send_json({"type": "auth", "credential": joined.credential})
        return socket


@dataclass
class Joined:
    world: World
    id: str
    credential: str
    body: dict[str, Any]

    async def call(
        self, action: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        return await self.world.post(
            f"/api/participants/{self.id}/{action}",
            body,
            credential=kwargs.pop("credential", self.credential),
            **kwargs,
        )


def refusal(status: int, body: dict[str, Any], expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with (
        LocalSFU() as sfu,
        RealtimeClient(
            sfu.base_url,
            sfu.app_id,
            sfu.app_secret,
        ) as realtime,
    ):
        directory = InMemoryDirectory()
        signer = TokenSigner(SECRET)

        async def room_exists(room: str) -> bool:
            return room in ROOMS

        api = WebApi(
            directory=directory,
            realtime=realtime,
            signer=signer,
            ice=IceServerSource.none(),
            public_url="http://placeholder",
            room_exists=room_exists,
        )
        app = web.Application()
        api.attach(app)
        await api.start()
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        api.public_url = f"http://127.0.0.1:{client.server.port}"
        try:
            yield World(sfu, directory, api, client, signer)
        finally:
            await client.close()  # runs on_shutdown: the API stops and closes sockets
            await api.stop()


@pytest.fixture
async def peers() -> AsyncIterator[list[RTCPeerConnection]]:
    made: list[RTCPeerConnection] = []
    yield made
    await asyncio.gather(*(pc.close() for pc in made))


async def mic_offer(
    peers: list[RTCPeerConnection], frequency_hz: float = 440.0
) -> tuple[RTCPeerConnection, str, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.append(pc)
    transceiver = pc.addTransceiver(ToneTrack(frequency_hz), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp, transceiver.mid


def offer_json(sdp: str) -> dict[str, str]:
    return {"type": "offer", "sdp": sdp}


async def publish(
    joined: Joined, peers: list[RTCPeerConnection], frequency_hz: float = 440.0
) -> RTCPeerConnection:
    pc, sdp, mid = await mic_offer(peers, frequency_hz)
    status, body = await joined.call("publish", {"sessionDescription": offer_json(sdp), "mid": mid})
    assert status == 200, body
    answer = body["sessionDescription"]
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return pc


async def pull_when_sending(
    joined: Joined, locator: dict[str, str], within_s: float = 10.0
) -> tuple[int, dict]:
    """Pull as the page does: a publisher whose first packets have not reached the SFU yet
    answers not_found_track_error, and the page asks again shortly."""
    async with asyncio.timeout(within_s):
        while True:
            status, body = await joined.call("pull", {"tracks": [locator]})
            errors = [t.get("error", {}).get("code") for t in body.get("tracks", [])]
            if status != 200 or errors != ["not_found_track_error"]:
                return status, body
            await asyncio.sleep(0.05)


async def mic_locator(world: World, joined: Joined) -> dict[str, str]:
    [member] = [m for m in await world.directory.members("lobby") if m.member_id == joined.id]
    [track] = member.tracks
    return {"sessionId": track.session_id, "trackName": track.track_name}


# -- the happy path --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_join_publish_pull_answer_hear_close_leave(world: World, peers) -> None:
    ada = await world.join(name="  Ada\u202e Lovelace\x00  ")
    assert ada.body["room"] == "lobby" and ada.body["role"] == "speaker"
    assert ada.body["iceServers"] == []  # the local SFU needs none
    assert ada.body["credentialTtl"] == CREDENTIAL_TTL_S
    assert ada.body["name"] == "Ada Lovelace"  # control and bidi characters dropped
    assert ada.id.startswith("web-")
    [member] = await world.directory.members("lobby")
    assert (member.member_id, member.kind, member.display_name) == (
        ada.id,
        MemberKind.WEB,
        "Ada Lovelace",
    )

    await publish(ada, peers, 440.0)
    locator = await mic_locator(world, ada)
    assert locator["trackName"] == "mic"

    bob = await world.join(role=Role.LISTENER, name="Bob")
    status, pulled = await pull_when_sending(bob, locator)
    assert status == 200, pulled
    [item] = pulled["tracks"]
    assert item["mid"] and "error" not in item, pulled
    assert pulled["requiresImmediateRenegotiation"] is True
    offer = pulled["sessionDescription"]
    assert offer["type"] == "offer"

    listener = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.append(listener)
    tracks: asyncio.Queue = asyncio.Queue()
    listener.on("track", tracks.put_nowait)
    await listener.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await listener.setLocalDescription(await listener.createAnswer())
    status, body = await bob.call(
        "answer", {"sessionDescription": {"type": "answer", "sdp": listener.localDescription.sdp}}
    )
    assert (status, body) == (200, {})
    received = await asyncio.wait_for(tracks.get(), 10)
    pcm = await asyncio.wait_for(collect_pcm(received, 1.0), 15)
    assert abs(dominant_frequency(pcm[len(pcm) // 2 :]) - 440) < 5

    # Pulling the same track again returns its mid without a new negotiation.
    status, again = await bob.call("pull", {"tracks": [locator]})
    assert status == 200 and again["tracks"][0]["mid"] == item["mid"]
    assert again["sessionDescription"] is None and again["requiresImmediateRenegotiation"] is False

    # A negotiated close of the pulled track.
    for transceiver in listener.getTransceivers():
        if transceiver.mid == item["mid"]:
            await transceiver.stop()
    await listener.setLocalDescription(await listener.createOffer())
    status, closed = await bob.call(
        "close",
        {"mids": [item["mid"]], "sessionDescription": offer_json(listener.localDescription.sdp)},
    )
    assert status == 200, closed
    assert closed["sessionDescription"]["type"] == "answer"

    status, body = await ada.call("leave")
    assert (status, body) == (200, {"left": True})
    assert [m.member_id for m in await world.directory.members("lobby")] == [bob.id]
    status, body = await ada.call("refresh")
    refusal(status, body, 404, "participant_not_found")


@pytest.mark.timeout(30)
async def test_refresh_gives_a_fresh_credential_bound_to_the_same_participant(world: World) -> None:
    ada = await world.join()
    await asyncio.sleep(1.1)  # a new iat, so a different token
    status, body = await ada.call("refresh")
    assert status == 200, body
    assert body["credential"] != ada.credential and body["credentialTtl"] == CREDENTIAL_TTL_S
    assert world.signer.verify_credential(body["credential"]).participant_id == ada.id
    status, body = await ada.call("refresh", credential=body["credential"])
    assert status == 200, body


@pytest.mark.timeout(30)
async def test_rejoin_with_a_credential_replaces_the_old_participant(world: World) -> None:
    ada = await world.join(role=Role.LISTENER)
    status, body = await world.post(
        "/api/rooms/lobby/join", {"credential": ada.credential, "name": "Ada"}
    )
    assert status == 200, body
    assert body["participantId"] != ada.id and body["role"] == "listener"
    assert [m.member_id for m in await world.directory.members("lobby")] == [body["participantId"]]
    status, body = await world.post("/api/rooms/other/join", {"credential": body["credential"]})
    refusal(status, body, 403, "wrong_room")


@pytest.mark.timeout(30)
async def test_an_operator_invite_opens_a_room_for_the_web_only(world: World) -> None:
    # "garden" is linked to no voice channel and has no members: only the operator's
    # invite (python -m bot invite) may open it, and its participants keep that right.
    discord_invite = world.signer.issue_invite("garden", Role.SPEAKER, 60, guild_id=42)[0]
    status, body = await world.post("/api/rooms/garden/join", {"token": discord_invite})
    refusal(status, body, 404, "room_not_found")
    operator_invite = world.signer.issue_invite("garden", Role.SPEAKER, 60, operator=True)[0]
    status, body = await world.post("/api/rooms/garden/join", {"token": operator_invite})
    assert status == 200, body
    ada = Joined(world, body["participantId"], body["credential"], body)
    assert world.signer.verify_credential(ada.credential).operator
    status, body = await ada.call("refresh")
    assert status == 200, body
    assert world.signer.verify_credential(body["credential"]).operator
    await ada.call("leave")
    assert await world.directory.members("garden") == []
    # The room is empty again: a rejoin with the credential still gets in.
    status, body = await world.post("/api/rooms/garden/join", {"credential": body["credential"]})
    assert status == 200, body
    assert [m.member_id for m in await world.directory.members("garden")] == [body["participantId"]]


# -- refusals: joining -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_join_refuses_forged_expired_wrong_room_and_unknown_room(world: World) -> None:
    token = world.invite("lobby", Role.LISTENER)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps(claims | {"role": "speaker"}).encode())
        .rstrip(b"=")
        .decode()
    )
    cases = [
        ({"token": f"{header}.{forged_payload}.{signature}"}, "lobby", 401, "token_invalid"),
        (
            {
                "token": TokenSigner("another-secret-of-enough-length-xxxxxxxx").issue_invite(
                    "lobby", Role.SPEAKER, 60
                )[0]
            },
            "lobby",
            401,
            "token_invalid",
        ),
        (
            {
                "token": TokenSigner(SECRET, clock=lambda: time.time() - 7200).issue_invite(
                    "lobby", Role.SPEAKER, 3600
                )[0]
            },
            "lobby",
            401,
            "token_expired",
        ),
        ({"token": world.invite("other")}, "lobby", 403, "wrong_room"),
        ({"token": world.invite("ghost")}, "ghost", 404, "room_not_found"),
        (
            {"token": world.signer.issue_credential("web-x", "lobby", Role.SPEAKER)[0]},
            "lobby",
            401,
            "token_invalid",
        ),
        ({"credential": world.invite("lobby")}, "lobby", 401, "token_invalid"),
        ({}, "lobby", 401, "token_invalid"),
        ({"token": 5}, "lobby", 401, "token_invalid"),
        ({"token": world.invite("lobby"), "name": ["x"]}, "lobby", 400, "bad_request"),
    ]
    for body, room, status_expected, code in cases:
        status, reply = await world.post(f"/api/rooms/{room}/join", body)
        refusal(status, reply, status_expected, code)
    assert await world.directory.members("lobby") == []


@pytest.mark.timeout(30)
async def test_join_refuses_bodies_that_are_not_json_objects(world: World) -> None:
    response = await world.client.post(
        "/api/rooms/lobby/join", data="token=x", headers={"Content-Type": "text/plain"}
    )
    refusal(response.status, await response.json(), 415, "unsupported_media_type")
    response = await world.client.post(
        "/api/rooms/lobby/join", data="{nope", headers={"Content-Type": "application/json"}
    )
    refusal(response.status, await response.json(), 400, "bad_json")
    response = await world.client.post("/api/rooms/lobby/join", json=[1, 2])
    refusal(response.status, await response.json(), 400, "bad_json")
    response = await world.client.post(
        "/api/rooms/lobby/join", data="x" * 200_000, headers={"Content-Type": "application/json"}
    )
    refusal(response.status, await response.json(), 413, "too_large")


@pytest.mark.timeout(30)
async def test_joins_per_invite_are_rate_limited(world: World) -> None:
    world.web._join_limits = KeyedBuckets(RateSpec(capacity=2, refill_per_s=0.01))
    token = world.invite()
    for _ in range(2):
        status, body = await world.post("/api/rooms/lobby/join", {"token": token})
        assert status == 200, body
    response = await world.client.post("/api/rooms/lobby/join", json={"token": token})
    refusal(response.status, await response.json(), 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    # Another invite is not held back by this one...
    status, body = await world.post("/api/rooms/lobby/join", {"token": world.invite()})
    assert status == 200
    # ...and rejoining with a credential counts against the invite it came from.
    status, body = await world.post("/api/rooms/lobby/join", {"credential": body["credential"]})
    assert status == 200, body
    status, body = await world.post("/api/rooms/lobby/join", {"credential": body["credential"]})
    refusal(status, body, 429, "rate_limited")


# -- refusals: participant calls -------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_participant_calls_refuse_missing_forged_expired_and_foreign_credentials(
    world: World,
) -> None:
    ada = await world.join()
    bob = await world.join(name="Bob")
    status, body = await ada.call("refresh", credential=None)
    refusal(status, body, 401, "credential_missing")
    status, body = await world.post(
        f"/api/participants/{ada.id}/refresh", headers={"Authorization": "Basic abc"}
    )
    refusal(status, body, 401, "credential_missing")
    head, _, signature = ada.credential.rpartition(".")
    status, body = await ada.call("refresh", credential=f"{head}.{signature[::-1]}")
    refusal(status, body, 401, "token_invalid")
    expired = TokenSigner(SECRET, clock=lambda: time.time() - 3600).issue_credential(
        ada.id, "lobby", Role.SPEAKER
    )[0]
    status, body = await ada.call("refresh", credential=expired)
    refusal(status, body, 401, "token_expired")
    status, body = await ada.call(
        "refresh", credential=world.invite()
    )  # an invite is no credential
    refusal(status, body, 401, "token_invalid")
    status, body = await ada.call("refresh", credential=bob.credential)  # Bob's, on Ada's path
    refusal(status, body, 403, "wrong_participant")
    ghost = world.signer.issue_credential("web-0000", "lobby", Role.SPEAKER)[0]
    status, body = await world.post("/api/participants/web-0000/refresh", credential=ghost)
    refusal(status, body, 404, "participant_not_found")


@pytest.mark.timeout(30)
async def test_listener_cannot_publish(world: World, peers) -> None:
    bob = await world.join(role=Role.LISTENER, name="Bob")
    _, sdp, mid = await mic_offer(peers)
    status, body = await bob.call("publish", {"sessionDescription": offer_json(sdp), "mid": mid})
    refusal(status, body, 403, "listener_cannot_publish")
    [member] = await world.directory.members("lobby")
    assert member.tracks == ()


@pytest.mark.timeout(30)
async def test_publish_refuses_video_bad_sdp_and_a_second_microphone(world: World, peers) -> None:
    ada = await world.join()
    video = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.append(video)
    video.addTransceiver("audio", direction="sendonly")
    video.addTransceiver("video", direction="sendonly")
    await video.setLocalDescription(await video.createOffer())
    status, body = await ada.call(
        "publish", {"sessionDescription": offer_json(video.localDescription.sdp), "mid": "0"}
    )
    refusal(status, body, 406, "audio_only")
    assert "audio only" in body["error"]["message"]
    for description, mid in [
        ({"type": "offer", "sdp": "hello"}, "0"),
        ({"type": "answer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"}, "0"),
        ("v=0", "0"),
        ({"type": "offer", "sdp": "v=0\r\ns=-\r\n"}, "0"),
        (
            {
                "type": "offer",
                "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n",
            },
            "0",
        ),
        ({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"}, "7"),
    ]:
        status, body = await ada.call("publish", {"sessionDescription": description, "mid": mid})
        refusal(status, body, 400, "bad_sdp")
    status, body = await ada.call(
        "publish", {"sessionDescription": offer_json(video.localDescription.sdp)}
    )
    refusal(status, body, 406, "audio_only")
    await publish(ada, peers)
    _, sdp, mid = await mic_offer(peers)
    status, body = await ada.call("publish", {"sessionDescription": offer_json(sdp), "mid": mid})
    refusal(status, body, 409, "already_publishing")


@pytest.mark.timeout(30)
async def test_pull_refuses_other_rooms_own_and_unknown_tracks(world: World, peers) -> None:
    ada = await world.join()
    await publish(ada, peers, 440.0)
    ada_mic = await mic_locator(world, ada)
    stranger = await world.join("other", name="Stranger")
    await publish(stranger, peers, 660.0)
    [member] = await world.directory.members("other")
    stranger_mic = {"sessionId": member.tracks[0].session_id, "trackName": "mic"}

    status, body = await ada.call("pull", {"tracks": [stranger_mic]})  # cross-room
    refusal(status, body, 403, "track_not_in_room")
    status, body = await ada.call(
        "pull", {"tracks": [ada_mic, stranger_mic]}
    )  # one bad item spoils the batch
    refusal(status, body, 400, "own_track")
    bob = await world.join(name="Bob")
    status, body = await bob.call("pull", {"tracks": [ada_mic, stranger_mic]})
    refusal(status, body, 403, "track_not_in_room")
    status, body = await bob.call(
        "pull", {"tracks": [{"sessionId": ada_mic["sessionId"], "trackName": "other"}]}
    )
    refusal(status, body, 403, "track_not_in_room")
    for bad in (
        {},
        {"tracks": []},
        {"tracks": "x"},
        {"tracks": [{"sessionId": 1, "trackName": "mic"}]},
        {"tracks": [ada_mic] * 33},
    ):
        status, body = await bob.call("pull", bad)
        refusal(status, body, 400, "bad_request")


@pytest.mark.timeout(30)
async def test_one_negotiation_at_a_time(world: World, peers) -> None:
    ada = await world.join()
    await publish(ada, peers)
    bob = await world.join(name="Bob")
    status, body = await bob.call(
        "answer", {"sessionDescription": {"type": "answer", "sdp": "v=0\r\nm=audio 9 X 111\r\n"}}
    )
    refusal(status, body, 409, "no_pending_offer")
    status, pulled = await pull_when_sending(bob, await mic_locator(world, ada))
    assert status == 200 and pulled["requiresImmediateRenegotiation"], pulled
    status, body = await bob.call("pull", {"tracks": [await mic_locator(world, ada)]})
    refusal(status, body, 409, "negotiation_pending")
    status, body = await bob.call(
        "close", {"mids": ["9"], "sessionDescription": offer_json("v=0\r\nm=audio 0 X 111\r\n")}
    )
    refusal(status, body, 409, "negotiation_pending")


@pytest.mark.timeout(30)
async def test_close_refuses_the_microphone_and_unknown_mids(world: World, peers) -> None:
    ada = await world.join()
    pc = await publish(ada, peers)
    offer = offer_json(pc.localDescription.sdp.replace("a=sendonly", "a=inactive"))
    mic_mid = pc.getTransceivers()[0].mid
    status, body = await ada.call("close", {"mids": [mic_mid], "sessionDescription": offer})
    refusal(status, body, 400, "cannot_close_microphone")
    status, body = await ada.call("close", {"mids": ["42"], "sessionDescription": offer})
    refusal(status, body, 400, "unknown_mid")
    status, body = await ada.call("close", {"mids": "0", "sessionDescription": offer})
    refusal(status, body, 400, "bad_request")


@pytest.mark.timeout(30)
async def test_requests_per_participant_are_rate_limited(world: World) -> None:
    ada = await world.join()
    bob = await world.join(name="Bob")
    statuses = []
    for _ in range(participants_module.HTTP_RATE.capacity + 5):
        status, _ = await ada.call("answer", {})
        statuses.append(status)
    assert statuses[: int(participants_module.HTTP_RATE.capacity)] == [400] * int(
        participants_module.HTTP_RATE.capacity
    )
    assert statuses[-1] == 429
    response = await world.client.post(
        f"/api/participants/{ada.id}/refresh",
        json={},
        headers={"Authorization": f"Bearer {ada.credential}"},
    )
    refusal(response.status, await response.json(), 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    status, _ = await bob.call("refresh")  # per participant: Bob is not held back
    assert status == 200


@pytest.mark.timeout(30)
async def test_state_changes_from_another_origin_are_refused(world: World) -> None:
    status, body = await world.post(
        "/api/rooms/lobby/join",
        {"token": world.invite()},
        headers={"Origin": "https://evil.example"},
    )
    refusal(status, body, 403, "bad_origin")
    status, body = await world.post(
        "/api/rooms/lobby/join", {"token": world.invite()}, headers={"Origin": world.origin}
    )
    assert status == 200, body


@pytest.mark.timeout(30)
async def test_unknown_api_routes_and_methods_answer_json(world: World) -> None:
    response = await world.client.get("/api/nothing/here")
    refusal(response.status, await response.json(), 404, "not_found")
    response = await world.client.get("/api/rooms/lobby/join")
    refusal(response.status, await response.json(), 405, "method_not_allowed")


# -- the events socket -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_events_socket_snapshot_then_changes_and_speaking(world: World, peers) -> None:
    await world.directory.join("lobby", "discord:1:2", MemberKind.DISCORD, "#general (Guild)")
    await world.directory.publish(
        "lobby", "discord:1:2", TrackInfo("sess-1", "dc:1:42", "Grace", "42")
    )
    await world.directory.set_speaking("lobby", "discord:1:2", "dc:1:42", True)
    ada = await world.join()
    socket = await world.events(ada)
    snapshot = await socket.receive_json(timeout=5)
    assert snapshot["type"] == "snapshot" and snapshot["you"] == ada.id
    by_id = {m["id"]: m for m in snapshot["members"]}
    assert by_id["discord:1:2"] == {
        "id": "discord:1:2",
        "kind": "discord",
        "name": "#general (Guild)",
        "tracks": [{"sessionId": "sess-1", "trackName": "dc:1:42", "name": "Grace"}],  # no user id
        "speaking": ["dc:1:42"],
    }
    assert by_id[ada.id]["kind"] == "web" and by_id[ada.id]["name"] == "Ada"

    bob = await world.join(name="Bob")
    assert await socket.receive_json(timeout=5) == {
        "type": "member_joined",
        "member": {"id": bob.id, "kind": "web", "name": "Bob", "tracks": [], "speaking": []},
    }
    await publish(ada, peers)
    published = await socket.receive_json(timeout=5)
    assert published["type"] == "track_published" and published["memberId"] == ada.id
    assert published["track"]["trackName"] == "mic" and published["track"]["name"] == "Ada"

    await socket.send_json({"type": "speaking", "speaking": True})
    assert await socket.receive_json(timeout=5) == {
        "type": "speaking",
        "memberId": ada.id,
        "trackName": "mic",
        "speaking": True,
    }
    [ada_member] = [m for m in await world.directory.members("lobby") if m.member_id == ada.id]
    assert ada_member.speaking == frozenset({"mic"})

    await socket.send_json({"type": "ping"})
    assert await socket.receive_json(timeout=5) == {"type": "pong"}
    await socket.send_json({"type": "dance"})
    assert (await socket.receive_json(timeout=5))["error"]["code"] == "bad_message"

    # Closing the socket takes the participant out of the room (the page rebuilds on drops).
    await socket.close()
    async with asyncio.timeout(5):
        while any(m.member_id == ada.id for m in await world.directory.members("lobby")):
            await asyncio.sleep(0.02)
    assert world.web.registry.find(ada.id) is None


@pytest.mark.timeout(30)
async def test_events_socket_refuses_other_origins_and_bad_credentials(world: World) -> None:
    ada = await world.join()
    bob = await world.join(name="Bob")
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        response = await world.client.get(
            f"/api/participants/{ada.id}/events",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                **headers,
            },
        )
        refusal(response.status, await response.json(), 403, "bad_origin")
    socket = await world.client.ws_connect(
        f"/api/participants/{ada.id}/events", headers={"Origin": world.origin}
    )
    await socket.send_json({"type": "auth", "credential": bob.credential})
    assert (await socket.receive_json(timeout=5))["error"]["code"] == "wrong_participant"
    assert (await socket.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert socket.close_code == 4401
    socket = await world.client.ws_connect(
        f"/api/participants/{ada.id}/events", headers={"Origin": world.origin}
    )
    await socket.send_json({"type": "auth", "credential": "garbage"})
    assert (await socket.receive_json(timeout=5))["error"]["code"] == "token_invalid"
    await socket.receive(timeout=5)
    assert socket.close_code == 4401
    response = await world.client.get(
        "/api/participants/web-nobody/events",
        headers={
            "Origin": world.origin,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    refusal(response.status, await response.json(), 404, "participant_not_found")


@pytest.mark.timeout(30)
async def test_a_newer_socket_replaces_the_older_one(world: World) -> None:
    ada = await world.join()
    first = await world.events(ada)
    assert (await first.receive_json(timeout=5))["type"] == "snapshot"
    second = await world.events(ada)
    assert (await second.receive_json(timeout=5))["type"] == "snapshot"
    await first.receive(timeout=5)
    assert first.close_code == 4409
    assert world.web.registry.find(ada.id) is not None


@pytest.mark.timeout(30)
async def test_participants_without_a_socket_or_refresh_are_removed(
    world: World, monkeypatch
) -> None:
    monkeypatch.setattr(participants_module, "SOCKET_GRACE_S", 0.3)
    ada = await world.join()
    async with asyncio.timeout(5):
        while world.web.registry.find(ada.id) is not None:
            await asyncio.sleep(0.05)
    assert await world.directory.members("lobby") == []

    monkeypatch.setattr(participants_module, "CREDENTIAL_GRACE_S", 0.0)
    bob = await world.join(name="Bob")
    socket = await world.events(bob)
    await socket.receive_json(timeout=5)
    participant = world.web.registry.get(bob.id)
    world.web.registry.credential_refreshed(participant, 0.3)  # as if its credential ran out now
    seen = []
    while (message := await socket.receive(timeout=5)).type is WSMsgType.TEXT:
        seen.append(json.loads(message.data))
    assert seen == [{"type": "member_left", "memberId": bob.id}]
    assert socket.close_code == 4404
    assert await world.directory.members("lobby") == []


# -- pages -----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_room_page_is_served_with_a_strict_policy_and_no_inline_code(world: World) -> None:
    response = await world.client.get("/r/lobby")
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        f"connect-src 'self' ws://127.0.0.1:{world.client.server.port}",
    ):
        assert directive in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = await response.text()
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert '<script type="module" src="../static/room.js"></script>' in html

    for name, content_type in [
        ("room.js", "text/javascript"),
        ("call.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("ui.js", "text/javascript"),
        ("room.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        response = await world.client.get(f"/static/{name}")
        assert response.status == 200, name
        assert response.content_type == content_type
        assert "Content-Security-Policy" in response.headers
        text = await response.text()
        assert not re.search(
            r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|eval\(", text
        ), name
    for path in (
        "/static/index.html.bak",
        "/static/..%2Fapi.py",
        "/static/tokens.py",
        "/r/Bad%20Room",
        "/r/" + "a" * 65,
    ):
        response = await world.client.get(path)
        assert response.status == 404, path


# -- ICE servers -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_ice_servers_turn_without_port_53_stun_only_or_none(tmp_path) -> None:
    calls: list[tuple[str, str]] = []

    def cloudflare(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        if request.url.path.endswith("/revoke"):
            return httpx.Response(204)
        assert json.loads(request.content) == {"ttl": 3600}
        return httpx.Response(
            201,
            json={
                "iceServers": [
                    {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
                    {
                        "urls": [
                            "turn:turn.cloudflare.com:3478?transport=udp",
                            "turn:turn.cloudflare.com:53?transport=udp",
                            "turn:turn.cloudflare.com:3478?transport=tcp",
                            "turns:turn.cloudflare.com:5349?transport=tcp",
                        ],
                        "username": "user-1",
                        "credential": "pass-1",
                    },
                ]
            },
        )

    turn = TurnClient(
        "https://rtc.example/v1", "key", "token", transport=httpx.MockTransport(cloudflare)
    )
    source = IceServerSource(turn=turn)
    grant = await source.grant()
    urls = [url for server in grant.to_json() for url in server["urls"]]
    assert urls == [
        "stun:stun.cloudflare.com:3478",
        "turn:turn.cloudflare.com:3478?transport=udp",
        "turn:turn.cloudflare.com:3478?transport=tcp",
        "turns:turn.cloudflare.com:5349?transport=tcp",
    ]
    assert grant.to_json()[1]["username"] == "user-1" and grant.turn_username == "user-1"
    await source.revoke(["user-1"])
    assert calls == [
        ("POST", "/v1/turn/keys/key/credentials/generate-ice-servers"),
        ("POST", "/v1/turn/keys/key/credentials/user-1/revoke"),
    ]
    await source.aclose()

    assert (await IceServerSource.stun_only().grant()).to_json() == [
        {"urls": ["stun:stun.cloudflare.com:3478"]}
    ]
    assert (await IceServerSource.none().grant()).to_json() == []

    config = tmp_path / "config.toml"
    config.write_text('backend = "cloudflare"\n[realtime]\napp_id = "app"\n')

    async def nothing(room: str) -> bool:
        return False

    for environ, expected in [
        ({"REALTIME_APP_SECRET": "s"}, "stun"),
        ({"REALTIME_APP_SECRET": "s", "TURN_KEY_ID": "k", "TURN_KEY_API_TOKEN": "t"}, "turn"),
    ]:
        settings = load_settings(config, environ={**environ, "SWITCHBOARD_INVITE_SECRET": SECRET})
        async with RealtimeClient("https://rtc.example/v1", "app", "s") as realtime:
            api = WebApi.from_settings(
                settings, directory=InMemoryDirectory(), realtime=realtime, room_exists=nothing
            )
            kind = "turn" if api.registry._ice.uses_turn else "stun"
            assert kind == expected
            await api.registry._ice.aclose()


# -- pure parts ------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_origins_compare_as_browsers_send_them() -> None:
    from bot.web.api import _origin_of

    assert _origin_of("https://Switchboard.Example:443/base/") == "https://switchboard.example"
    assert _origin_of("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert _origin_of("http://[::1]:80") == "http://[::1]"
    for bad in ("null", "file:///x", "https://", "http://host:99999", ""):
        assert _origin_of(bad) is None


@pytest.mark.timeout(10)
def test_token_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(RateSpec(capacity=3, refill_per_s=2), clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0
    now[0] += 100
    assert bucket.full
    keyed = KeyedBuckets(RateSpec(capacity=1, refill_per_s=1), max_keys=2, clock=lambda: now[0])
    assert keyed.take("a") == 0 and keyed.take("a") > 0
    keyed.take("b")
    keyed.take("c")
    assert len(keyed) == 2


# -- /bridge invite, through the real service and the fake Discord ---------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_bridge_invite_gives_admins_a_working_link(tmp_path) -> None:
    from tests.fakes.discord import FakeDiscord, Permission
    from tests.integration.test_bot import running, write_config

    async with FakeDiscord() as fake:
        guild = fake.add_guild("Switchboard HQ")
        text = guild.add_text_channel("general")
        lounge = guild.add_voice_channel("Lounge")
        admin = fake.add_member(
            guild, "carol", roles=[guild.add_role("mods", Permission.MANAGE_CHANNELS)]
        )
        alice = fake.add_member(guild, "alice")
        config = write_config(tmp_path / "config.toml", guild.id)
        async with running(fake, config) as service:
            denied = await fake.send_interaction(
                guild, text, alice, "bridge", {"room": "lobby"}, subcommand="invite"
            )
            assert "Manage Channels" in await denied.final_text()
            unlinked = await fake.send_interaction(
                guild, text, admin, "bridge", {"room": "lobby"}, subcommand="invite"
            )
            said = await unlinked.final_text()
            assert "There is no room **lobby** yet" in said and "/bridge link" in said
            bad = await fake.send_interaction(
                guild, text, admin, "bridge", {"room": "Lobby!"}, subcommand="invite"
            )
            assert "not a valid room name" in await bad.final_text()

            await service.store.link(guild.id, lounge.id, "lobby", "manual", str(admin.user.id))
            made = await fake.send_interaction(
                guild,
                text,
                admin,
                "bridge",
                {"room": "lobby", "role": "listener", "expires": "1h"},
                subcommand="invite",
            )
            reply = await made.response()
            assert reply.ephemeral
            [embed] = reply.embeds
            url = embed["url"]
            [[button]] = [row["components"] for row in reply.data["components"]]
            assert button["url"] == url and button["style"] == 5  # a link button
            prefix = f"{service.settings.http.public_url}/r/lobby#t="
            assert url.startswith(prefix)
            invite = service.web.signer.verify_invite(url[len(prefix) :])
            assert (invite.room, invite.role) == ("lobby", Role.LISTENER)
            assert invite.guild_id == str(guild.id) and invite.created_by == str(admin.user.id)
            stored = await service.store.get_invite(invite.jti)
            assert stored is not None and stored.role == "listener" and stored.max_participants == 5
            assert 3590 <= invite.expires_at - time.time() <= 3600

            # The service serves the page and the API on its one HTTP server, no Discord needed
            # to join: the room exists because a channel is linked to it.
            base = f"http://127.0.0.1:{service.http.port}"
            async with httpx.AsyncClient() as http:
                page = await http.get(f"{base}/r/lobby")
                assert page.status_code == 200 and "Content-Security-Policy" in page.headers
                joined = await http.post(
                    f"{base}/api/rooms/lobby/join",
                    json={"token": url[len(prefix) :], "name": "Zoe"},
                )
                assert joined.status_code == 200, joined.text
                assert joined.json()["role"] == "listener"
                assert (await http.get(f"{base}/live")).status_code == 200
    assert fake.interactions.violations == []
