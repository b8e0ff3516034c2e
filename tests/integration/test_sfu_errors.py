"""Error paths of the local SFU, as Cloudflare Realtime serves them (docs/realtime-api.md §5).

Every error is asserted with its exact HTTP status and `errorCode`, and every response but a
204 must carry a JSON body (partytracks calls `.json()` on all of them). After bad requests
the server must still serve good ones, up to real media between aiortc peers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.sfu import LocalSFU, SfuConfig
from media.sfu.session import SessionState
from tests.support.opus_source import OpusReplayTrack, encode_tone
from tests.support.rtc import Api, Client
from tests.support.waiting import wait_until

NO_BODY = object()


@dataclass
class Http:
    """Raw HTTP against one server: exact bytes, headers, prefixes and query strings."""

    sfu: LocalSFU
    client: httpx.AsyncClient

    @property
    def origin(self) -> str:
        return self.sfu.base_url.removesuffix("/v1")

    def url(self, path: str, prefix: str = "/v1", **values: str) -> str:
        return self.origin + prefix + path.format(app=self.sfu.app_id, **values)

    async def send(
        self,
        method: str,
        path: str,
        body: Any = NO_BODY,
        *,
        content: bytes | None = None,
        headers: dict[str, Any] | None = None,
        auth: bool = True,
        prefix: str = "/v1",
        **values: str,
    ) -> httpx.Response:
        sent: dict[str, Any] = {}
        if auth:
            sent["Authorization"] = f"Bearer {self.sfu.app_secret}"
        sent.update(headers or {})
        if body is not NO_BODY:
            # ASCII-escaped, so bodies may hold lone surrogates and control characters
            content = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        return await self.client.request(
            method, self.url(path, prefix, **values), content=content, headers=sent
        )

    async def new_session(self) -> str:
        response = await self.send("POST", "/apps/{app}/sessions/new")
        assert response.status_code == 201, response.text
        return response.json()["sessionId"]


def expect(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The exact status, a JSON body, and for errors the exact errorCode."""
    request = response.request
    detail = f"{request.method} {request.url} -> {response.status_code} {response.text[:300]}"
    assert response.status_code == status, detail
    assert response.headers["content-type"].startswith("application/json"), detail
    body = response.json()
    assert isinstance(body, dict), detail
    if code is not None:
        assert body["errorCode"] == code, detail
        assert isinstance(body["errorDescription"], str) and body["errorDescription"], detail
    return body


async def still_serves(http: Http) -> None:
    """A good request right after a bad one: a new session that GET can read."""
    session_id = await http.new_session()
    state = expect(await http.send("GET", "/apps/{app}/sessions/{sid}", sid=session_id), 200)
    assert state == {"tracks": [], "dataChannels": []}


async def make_offer(kind: str = "audio") -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(kind, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


async def pull_when_sending(client: Client, publisher: str, name: str) -> dict[str, Any]:
    """Pull until the publisher is sending (not_found_track_error with mid "" means retry)."""
    for _ in range(200):
        response = await client.api.call(
            "POST",
            f"/sessions/{client.session_id}/tracks/new",
            {"tracks": [{"location": "remote", "sessionId": publisher, "trackName": name}]},
        )
        result = expect(response, 200)
        item = result["tracks"][0]
        if "errorCode" not in item:
            return result
        assert item["errorCode"] == "not_found_track_error" and item["mid"] == ""
        await asyncio.sleep(0.05)
    raise AssertionError("the publisher never started sending")


async def media_flows(api: Api) -> None:
    """A real aiortc push and pull; the subscriber receives the publisher's Opus bytes."""
    packets = encode_tone(440, 25)
    publisher, subscriber = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await subscriber.open()
        await publisher.push(OpusReplayTrack(packets), "mic")
        result = await pull_when_sending(subscriber, publisher.session_id, "mic")
        assert result["requiresImmediateRenegotiation"] is True
        await subscriber.answer(result["sessionDescription"])
        mid = result["tracks"][0]["mid"]
        await wait_until(lambda: len(subscriber.received[mid]) >= 10, what="10 packets")
        assert {p.payload for p in subscriber.received[mid]} <= set(packets)
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


@pytest.fixture
async def http(sfu):
    async with httpx.AsyncClient(timeout=30) as client:
        yield Http(sfu, client)


S = "/apps/{app}/sessions/{sid}"
ENDPOINTS: list[tuple[str, str]] = [
    ("POST", "/apps/{app}/sessions/new"),
    ("POST", S + "/tracks/new"),
    ("PUT", S + "/renegotiate"),
    ("PUT", S + "/tracks/update"),
    ("PUT", S + "/tracks/close"),
    ("GET", S),
    ("POST", S + "/datachannels/establish"),
    ("POST", S + "/datachannels/new"),
    ("PUT", S + "/datachannels/close"),
]
TURN = "/turn/keys/{app}/credentials"
TURN_ENDPOINTS: list[tuple[str, str]] = [
    ("POST", TURN + "/generate-ice-servers"),
    ("POST", TURN + "/generate"),
    ("POST", TURN + "/someuser/revoke"),
]


# -- 401 ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_unauthorized_on_every_endpoint(http: Http, prefix: str):
    session_id = await http.new_session()
    bad_headers: list[dict[str, Any]] = [
        {},  # no Authorization at all
        {"Authorization": "Bearer wrong-secret"},
        {"Authorization": f"Basic {http.sfu.app_secret}"},
        {"Authorization": http.sfu.app_secret},  # no scheme
        {"Authorization": "Bearer"},
        {"Authorization": b"Bearer \xff\xfe"},  # bytes that are no UTF-8
    ]
    for method, path in ENDPOINTS + TURN_ENDPOINTS:
        for headers in bad_headers:
            # a malformed body must not win over the missing credentials
            response = await http.send(
                method,
                path,
                content=b"{not json",
                headers=headers,
                auth=False,
                prefix=prefix,
                sid=session_id,
            )
            expect(response, 401, "unauthorized")
    # unknown app id / key id, even with the right secret
    for method, path in ENDPOINTS + TURN_ENDPOINTS:
        response = await http.client.request(
            method,
            http.origin + prefix + path.format(app="no-such-app", sid=session_id),
            headers={"Authorization": f"Bearer {http.sfu.app_secret}"},
        )
        expect(response, 401, "unauthorized")
    # the scheme name is case-insensitive
    response = await http.send(
        "GET",
        S,
        auth=False,
        headers={"Authorization": f"bearer {http.sfu.app_secret}"},
        sid=session_id,
    )
    expect(response, 200)
    await still_serves(http)


# -- 400 decoding_error ---------------------------------------------------------------------

TRACK = {"location": "remote", "sessionId": "0" * 32, "trackName": "mic"}
DESCRIPTION = {"type": "offer", "sdp": "v=0"}

# (endpoint, raw bytes or a JSON value)
DECODING_ERRORS: list[tuple[str, str, bytes | Any]] = [
    # malformed or non-object JSON, on every endpoint that reads a body
    *[
        (m, p, raw)
        for m, p in ENDPOINTS + TURN_ENDPOINTS[:2]
        if m != "GET"
        for raw in (
            b"{not json",
            b'{"tracks": [',
            b"[]",
            b'"a string"',
            b"42",
            b"null",
            b"\xff\xfe\xfa binary \x00\x01",
        )
    ],
    ("POST", "/apps/{app}/sessions/new", b"[" * 100_000),  # nesting deeper than any parser likes
    ("POST", "/apps/{app}/sessions/new", b'{"sessionDescription": {"sdp": ' + b"9" * 5000 + b"}}"),
    ("POST", S + "/tracks/new", b'{"tracks": [' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}"),
    # wrong field types
    ("POST", S + "/tracks/new", {"tracks": "mic"}),
    ("POST", S + "/tracks/new", {"tracks": {"0": TRACK}}),
    ("POST", S + "/tracks/new", {"tracks": ["mic"]}),
    ("POST", S + "/tracks/new", {"tracks": [None]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "trackName": 7}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "sessionId": ["x"]}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "mid": 0}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "location": 1}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "bidirectionalMediaStream": "yes"}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "simulcast": "h"}]}),
    ("POST", S + "/tracks/new", {"tracks": [TRACK], "autoDiscover": 1}),
    ("POST", S + "/tracks/new", {"tracks": [TRACK], "sessionDescription": "v=0"}),
    (
        "POST",
        S + "/tracks/new",
        {"tracks": [TRACK], "sessionDescription": {"type": "offer", "sdp": 0}},
    ),
    (
        "POST",
        S + "/tracks/new",
        {"tracks": [TRACK], "sessionDescription": {"type": True, "sdp": "v=0"}},
    ),
    (
        "POST",
        S + "/tracks/new",
        {"tracks": [TRACK], "sessionDescription": {"type": "offer", "sdp": ["v=0"]}},
    ),
    # a type error wins over a bad value, wherever each sits
    ("POST", S + "/tracks/new", {"tracks": [{"location": "nowhere"}, {**TRACK, "trackName": 1}]}),
    ("POST", S + "/tracks/new", {"tracks": [{"location": "nowhere"}], "sessionDescription": 5}),
    ("PUT", S + "/tracks/close", {"tracks": [], "force": "true"}),
    ("PUT", S + "/tracks/close", {"tracks": [{"mid": 0}], "force": True}),
    ("PUT", S + "/tracks/close", {"tracks": "0", "force": True}),
    ("PUT", S + "/tracks/update", {"tracks": [{**TRACK, "trackName": False}]}),
    ("POST", "/apps/{app}/sessions/new", {"sessionDescription": ["offer", "v=0"]}),
    ("POST", "/apps/{app}/sessions/new", {"sessionDescription": {"type": "offer", "sdp": 1.5}}),
    ("PUT", S + "/renegotiate", {"sessionDescription": {"type": "answer", "sdp": {}}}),
    (
        "POST",
        S + "/datachannels/new",
        {"dataChannels": [{"location": "local", "dataChannelName": 5}]},
    ),
    (
        "POST",
        S + "/datachannels/new",
        {"dataChannels": [{"location": "local", "dataChannelName": "c", "ordered": "no"}]},
    ),
    (
        "POST",
        S + "/datachannels/new",
        {"dataChannels": [{"location": "local", "dataChannelName": "c", "maxRetransmits": 1.5}]},
    ),
    ("POST", S + "/datachannels/establish", {"dataChannel": "server-events"}),
    ("PUT", S + "/datachannels/close", {"dataChannels": [{"id": "1"}]}),
    ("PUT", S + "/datachannels/close", {"dataChannels": [{"id": True}]}),
    ("POST", TURN + "/generate-ice-servers", {"ttl": "86400"}),
    ("POST", TURN + "/generate", {"ttl": 1.5}),
]


@pytest.mark.timeout(60)
async def test_decoding_errors(http: Http):
    session_id = await http.new_session()
    sessions_before = len(http.sfu.registry)
    for method, path, body in DECODING_ERRORS:
        if isinstance(body, bytes):
            response = await http.send(method, path, content=body, sid=session_id)
        else:
            response = await http.send(method, path, body, sid=session_id)
        expect(response, 400, "decoding_error")
        assert len(http.sfu.registry) == sessions_before, (method, path, body)
    await still_serves(http)


# -- 406 invalid_params ---------------------------------------------------------------------

INVALID_PARAMS: list[tuple[str, str, Any]] = [
    ("PUT", S + "/tracks/close", {"tracks": [], "force": True}),
    ("PUT", S + "/tracks/close", {"force": True}),
    ("PUT", S + "/tracks/close", {"tracks": [{}], "force": True}),
    ("PUT", S + "/tracks/close", {"tracks": [{"mid": ""}], "force": True}),
    ("PUT", S + "/tracks/close", {"tracks": [{"mid": str(i)} for i in range(65)], "force": True}),
    ("PUT", S + "/tracks/close", {"tracks": [{"mid": "0"}]}),  # neither an offer nor force
    ("POST", S + "/tracks/new", {"tracks": [dict(TRACK, trackName=f"t{i}") for i in range(65)]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "location": "elsewhere"}]}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "location": "LOCAL"}]}),
    ("POST", S + "/tracks/new", {"tracks": [{"trackName": "mic"}]}),  # no location
    ("POST", S + "/tracks/new", {"tracks": []}),
    ("POST", S + "/tracks/new", {}),
    ("POST", S + "/tracks/new", {"tracks": [{**TRACK, "simulcast": {"priorityOrdering": "best"}}]}),
    ("PUT", S + "/tracks/update", {"tracks": [{**TRACK, "location": "up"}]}),
    ("PUT", S + "/renegotiate", {}),
    ("POST", S + "/datachannels/new", {"dataChannels": []}),
    ("POST", S + "/datachannels/new", {"dataChannels": [{"location": "local"}]}),
    (
        "POST",
        S + "/datachannels/new",
        {"dataChannels": [{"location": "north", "dataChannelName": "c"}]},
    ),
    (
        "POST",
        S + "/datachannels/new",
        {"dataChannels": [{"location": "local", "dataChannelName": "c", "maxRetransmits": -1}]},
    ),
    (
        "POST",
        S + "/datachannels/establish",
        {"dataChannel": {"location": "remote", "dataChannelName": "chat"}},
    ),
    ("PUT", S + "/datachannels/close", {"dataChannels": []}),
    ("PUT", S + "/datachannels/close", {"dataChannels": [{"dataChannelName": "c"}]}),
    ("PUT", S + "/datachannels/close", {"dataChannels": [{"id": -1}]}),
    ("POST", TURN + "/generate-ice-servers", {"ttl": 0}),
    ("POST", TURN + "/generate", {"ttl": -5}),
]


@pytest.mark.timeout(60)
async def test_invalid_params(http: Http):
    session_id = await http.new_session()
    for method, path, body in INVALID_PARAMS:
        response = await http.send(method, path, body, sid=session_id)
        expect(response, 406, "invalid_params")
        await still_serves(http)


# -- 406 invalid_session_description ---------------------------------------------------------


def hostile_descriptions(offer: str, video_offer: str) -> dict[str, dict[str, Any]]:
    padding = "".join(f"a=x-pad-{i}:{'p' * 60}\r\n" for i in range(9000))
    many = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" * 10_000
    )
    junk = "".join(chr(c) for c in range(0x800)) + "\udc80\ud800" + "\x00" * 100
    return {
        "garbage": {"type": "offer", "sdp": "hello, I am not SDP"},
        "header only": {
            "type": "offer",
            "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
        },
        "empty sdp": {"type": "offer", "sdp": ""},
        "missing sdp": {"type": "offer"},
        "pranswer": {"type": "pranswer", "sdp": offer},
        "rollback": {"type": "rollback", "sdp": offer},
        "answer instead of offer": {"type": "answer", "sdp": offer},
        "no ice-ufrag": {"type": "offer", "sdp": without(offer, "a=ice-ufrag")},
        "no ice-pwd": {"type": "offer", "sdp": without(offer, "a=ice-pwd")},
        "no fingerprint": {"type": "offer", "sdp": without(offer, "a=fingerprint")},
        "no mid": {"type": "offer", "sdp": without(offer, "a=mid")},
        "video only": {"type": "offer", "sdp": video_offer},
        "10000 m-lines": {"type": "offer", "sdp": many},
        "600 KB": {"type": "offer", "sdp": offer + padding},
        "binary junk": {"type": "offer", "sdp": junk},
        "unicode": {"type": "offer", "sdp": "ｖ＝０\r\nｍ＝ａｕｄｉｏ ９ 🎙️ 日本語\r\n" * 50},
        "cyrillic m=аudio": {"type": "offer", "sdp": offer.replace("m=audio", "m=\u0430udio")},
        "lf only, truncated": {
            "type": "offer",
            "sdp": offer.replace("\r\n", "\n")[: len(offer) // 2],
        },
    }


@pytest.mark.timeout(90)
async def test_invalid_session_descriptions(http: Http):
    offer, video_offer = await make_offer("audio"), await make_offer("video")
    hostile = hostile_descriptions(offer, video_offer)
    assert len(hostile["600 KB"]["sdp"]) > 600_000
    assert len(hostile["10000 m-lines"]["sdp"]) < 512 * 1024  # judged by its m-lines, not its size
    for name, description in hostile.items():
        sessions_before = len(http.sfu.registry)
        started = time.monotonic()
        response = await http.send(
            "POST", "/apps/{app}/sessions/new", {"sessionDescription": description}
        )
        expect(response, 406, "invalid_session_description")
        assert time.monotonic() - started < 3, name
        assert len(http.sfu.registry) == sessions_before, (
            f"{name}: a failed sessions/new leaked its session"
        )

        session_id = await http.new_session()
        body = {
            "sessionDescription": description,
            "tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
        }
        response = await http.send("POST", S + "/tracks/new", body, sid=session_id)
        expect(response, 406, "invalid_session_description")
        await still_serves(http)
    # renegotiate: an answer when no offer is pending, and an offer where an answer belongs
    session_id = await http.new_session()
    for description in ({"type": "answer", "sdp": offer}, {"type": "offer", "sdp": offer}):
        response = await http.send(
            "PUT", S + "/renegotiate", {"sessionDescription": description}, sid=session_id
        )
        expect(response, 406, "invalid_session_description")
    # the same offer, intact, is accepted: the failures above were the mutations
    response = await http.send(
        "POST", "/apps/{app}/sessions/new", {"sessionDescription": {"type": "offer", "sdp": offer}}
    )
    assert expect(response, 201)["sessionDescription"]["type"] == "answer"


# -- 406 for overlapping negotiation ---------------------------------------------------------


@pytest.mark.timeout(60)
async def test_overlapping_negotiation_is_refused(api: Api, http: Http):
    packets = encode_tone(523, 25)
    publisher, subscriber = Client(api), Client(api, tap=True)
    try:
        await publisher.open()
        await subscriber.open()
        await publisher.push(OpusReplayTrack(packets), "mic")
        first = await pull_when_sending(subscriber, publisher.session_id, "mic")
        assert first["requiresImmediateRenegotiation"] is True
        assert first["sessionDescription"]["type"] == "offer"
        sid = subscriber.session_id
        pull = {
            "tracks": [
                {"location": "remote", "sessionId": publisher.session_id, "trackName": "mic"}
            ]
        }

        # the SFU's offer is unanswered: every new negotiation on the session is refused
        expect(
            await http.send("POST", S + "/tracks/new", pull, sid=sid),
            406,
            "invalid_session_description",
        )
        push = {
            "sessionDescription": {"type": "offer", "sdp": await make_offer()},
            "tracks": [{"location": "local", "mid": "0", "trackName": "mine"}],
        }
        expect(
            await http.send("POST", S + "/tracks/new", push, sid=sid),
            406,
            "invalid_session_description",
        )
        local = {"tracks": [{"location": "local", "trackName": "sfu-offers"}]}
        expect(
            await http.send("POST", S + "/tracks/new", local, sid=sid),
            406,
            "invalid_session_description",
        )
        # bad answers are refused without spoiling the pending offer
        bad_answers = [
            {"type": "answer", "sdp": "v=0\r\n"},
            {"type": "answer", "sdp": await make_offer()},  # an offer's SDP, not an answer to ours
            {"type": "offer", "sdp": await make_offer()},
        ]
        for description in bad_answers:
            response = await http.send(
                "PUT", S + "/renegotiate", {"sessionDescription": description}, sid=sid
            )
            expect(response, 406, "invalid_session_description")

        await subscriber.answer(first["sessionDescription"])
        mid = first["tracks"][0]["mid"]
        await wait_until(lambda: len(subscriber.received[mid]) >= 10, what="10 packets")
        # answered: the next renegotiate has nothing to answer
        answer = {"type": "answer", "sdp": subscriber.pc.localDescription.sdp}
        expect(
            await http.send("PUT", S + "/renegotiate", {"sessionDescription": answer}, sid=sid),
            406,
            "invalid_session_description",
        )
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


# -- 410 session_error -----------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_unknown_session_is_gone(http: Http, prefix: str):
    bodies = {
        "/tracks/new": {"tracks": [TRACK]},
        "/renegotiate": {"sessionDescription": {"type": "answer", "sdp": "v=0"}},
        "/tracks/update": {"tracks": [TRACK]},
        "/tracks/close": {"tracks": [{"mid": "0"}], "force": True},
        "/datachannels/establish": {},
        "/datachannels/new": {"dataChannels": [{"location": "local", "dataChannelName": "c"}]},
        "/datachannels/close": {"dataChannels": [{"id": 1}]},
    }
    for unknown in ("0" * 32, "no-such-session", "%F0%9F%8E%99"):
        for method, path in ENDPOINTS[1:]:
            body = bodies.get(path.removeprefix(S), NO_BODY)
            response = await http.send(method, path, body, prefix=prefix, sid=unknown)
            expect(response, 410, "session_error")
    await still_serves(http)


@pytest.mark.timeout(60)
async def test_closed_session_is_gone():
    async with (
        LocalSFU(SfuConfig(session_reuse_s=0.3)) as sfu,
        httpx.AsyncClient(timeout=30) as raw,
    ):
        http = Http(sfu, raw)
        api = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
        client = Client(api)
        try:
            await client.open()
            await client.push(OpusReplayTrack(encode_tone(300, 10)), "mic")
            session = sfu.registry.get(client.session_id)
            await wait_until(lambda: session.state is SessionState.CONNECTED, what="connected")
            await client.close()  # the peer goes away; after the reuse window the session is gone
            for _ in range(100):
                response = await http.send("GET", S, sid=client.session_id)
                if response.status_code == 410:
                    break
                expect(response, 200)
                await asyncio.sleep(0.05)
            expect(response, 410, "session_error")
            pull = {"tracks": [TRACK]}
            expect(
                await http.send("POST", S + "/tracks/new", pull, sid=client.session_id),
                410,
                "session_error",
            )
            expect(
                await http.send(
                    "PUT",
                    S + "/tracks/close",
                    {"tracks": [{"mid": "0"}], "force": True},
                    sid=client.session_id,
                ),
                410,
                "session_error",
            )
            # a session closed by the server (as the reaper does) answers 410 at once
            other = await http.new_session()
            await sfu.registry.get(other).close()
            expect(await http.send("GET", S, sid=other), 410, "session_error")
            await still_serves(http)
        finally:
            await client.close()
            await api.aclose()


# -- 425 -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_peer_not_connected_answers_425_after_five_seconds(api: Api, http: Http):
    client = Client(api)
    try:
        await client.open()
        # push with an offer; the client never applies the SFU's answer, so ICE never connects
        client.pc.addTransceiver(OpusReplayTrack(encode_tone(300, 10)), direction="sendonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        body = {
            "sessionDescription": {"type": "offer", "sdp": client.pc.localDescription.sdp},
            "tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
        }
        expect(await http.send("POST", S + "/tracks/new", body, sid=client.session_id), 200)
        other = await http.new_session()

        pull = {"tracks": [{"location": "remote", "sessionId": other, "trackName": "x"}]}
        started = time.monotonic()
        waiting = asyncio.create_task(
            http.send("POST", S + "/tracks/new", pull, sid=client.session_id)
        )
        await asyncio.sleep(0.5)
        # the wait holds one session, not the server
        quick = time.monotonic()
        expect(await http.send("GET", S, sid=other), 200)
        assert time.monotonic() - quick < 1
        response = await waiting
        elapsed = time.monotonic() - started
        expect(response, 425, "session_error")
        assert 4.5 <= elapsed < 8, elapsed
        await still_serves(http)
    finally:
        await client.close()


# -- item-level errors inside a 200 ----------------------------------------------------------


@pytest.mark.timeout(30)
async def test_item_errors_inside_200(http: Http):
    publisher = await http.new_session()
    subscriber = await http.new_session()
    # the publisher pushes with an offer but never completes the connection: not sending yet
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(OpusReplayTrack(encode_tone(300, 10)), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        push = {
            "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp},
            "tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
        }
        pushed = expect(await http.send("POST", S + "/tracks/new", push, sid=publisher), 200)
        assert pushed["tracks"] == [{"trackName": "mic", "mid": "0"}]
    finally:
        await pc.close()
    pull = {
        "tracks": [
            {"location": "remote", "sessionId": publisher, "trackName": "mic"},  # not sending yet
            {"location": "remote", "sessionId": publisher, "trackName": "nope"},  # no such track
            {"location": "remote", "sessionId": "0" * 32, "trackName": "mic"},  # no such publisher
        ]
    }
    result = expect(await http.send("POST", S + "/tracks/new", pull, sid=subscriber), 200)
    assert result["requiresImmediateRenegotiation"] is False
    assert "sessionDescription" not in result
    assert [
        (t["trackName"], t["sessionId"], t["mid"], t["errorCode"]) for t in result["tracks"]
    ] == [
        ("mic", publisher, "", "not_found_track_error"),
        ("nope", publisher, "", "not_found_track_error"),
        ("mic", "0" * 32, "", "not_found_track_error"),
    ]
    # closing unknown mids: 200 with close_track_error per item
    close = {"tracks": [{"mid": "7"}, {"mid": "#mic"}], "force": True}
    closed = expect(await http.send("PUT", S + "/tracks/close", close, sid=subscriber), 200)
    assert [(t["mid"], t["errorCode"]) for t in closed["tracks"]] == [
        ("7", "close_track_error"),
        ("#mic", "close_track_error"),
    ]
    assert closed["requiresImmediateRenegotiation"] is False
    await still_serves(http)


# -- prefixes, content types, query strings ---------------------------------------------------


@pytest.mark.timeout(30)
async def test_prefixes_content_types_and_query_strings(http: Http):
    content_types: list[dict[str, str]] = [
        {"Content-Type": "application/json"},
        {"Content-Type": "text/plain;charset=UTF-8"},  # partytracks
        {},  # none at all
        {"Content-Type": "application/octet-stream"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ]
    queries = ["", "?", "?foo=1", "?thirdparty=true&correlationId=abc", "?thirdparty=maybe&&=&x"]
    for prefix in ("/v1", ""):
        for headers in content_types:
            for query in queries:
                response = await http.send(
                    "POST",
                    "/apps/{app}/sessions/new" + query,
                    content=b"{}" if headers else b"",
                    headers=headers,
                    prefix=prefix,
                )
                session_id = expect(response, 201)["sessionId"]
                other = "" if prefix == "/v1" else "/v1"  # readable under the other prefix too
                state = expect(await http.send("GET", S + query, prefix=other, sid=session_id), 200)
                assert state == {"tracks": [], "dataChannels": []}
                pull = json.dumps({"tracks": [{**TRACK, "sessionId": session_id}]}).encode()
                result = expect(
                    await http.send(
                        "POST",
                        S + "/tracks/new" + query,
                        content=pull,
                        headers=headers,
                        prefix=prefix,
                        sid=session_id,
                    ),
                    200,
                )
                assert result["tracks"][0]["errorCode"] == "not_found_track_error"
    for path in (TURN + "/generate-ice-servers?", TURN + "/generate?x=1"):
        response = await http.send(
            "POST", path, content=b'{"ttl": 86400}', headers={"Content-Type": "text/plain"}
        )
        servers = expect(response, 201)["iceServers"]
        assert servers
    response = await http.send("POST", TURN + "/someone/revoke?", content=b"")
    assert response.status_code == 204 and response.content == b""


# -- 413 -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_huge_body_is_413_json(http: Http):
    session_id = await http.new_session()
    big = json.dumps({"tracks": [TRACK], "pad": "x" * (2 * 1024 * 1024)}).encode()

    async def chunked():
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    for method, path in [
        ("POST", "/apps/{app}/sessions/new"),
        ("POST", S + "/tracks/new"),
        ("PUT", S + "/tracks/close"),
        ("POST", TURN + "/generate-ice-servers"),
    ]:
        expect(await http.send(method, path, content=big, sid=session_id), 413, "invalid_params")
        response = await http.client.request(
            method,
            http.url(path, sid=session_id),
            content=chunked(),
            headers={"Authorization": f"Bearer {http.sfu.app_secret}"},
        )
        expect(response, 413, "invalid_params")
        await still_serves(http)
    # just under the limit is decoded as usual
    near = json.dumps(
        {"tracks": [{**TRACK, "sessionId": session_id}], "pad": "x" * 1_000_000}
    ).encode()
    result = expect(await http.send("POST", S + "/tracks/new", content=near, sid=session_id), 200)
    assert result["tracks"][0]["errorCode"] == "not_found_track_error"


# -- 404 / 405 -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_unknown_paths_404_and_wrong_methods_405(http: Http):
    session_id = await http.new_session()
    for method, path in [
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/v2/apps/{app}/sessions/new"),
        ("POST", "/v1/apps/{app}/sessions"),
        ("POST", "/v1/apps/{app}/sessions/{sid}/tracks/nope"),
        ("POST", "/v1/apps/{app}/sessions//tracks/new"),
        ("DELETE", "/v1/apps/{app}/sessions/{sid}/tracks"),
        ("GET", "/v1/turn/keys/{app}"),
        ("PUT", "/apps/{app}/sessions/{sid}/datachannels/update"),
        ("GET", "/favicon.ico"),
    ]:
        url = http.origin + path.format(app=http.sfu.app_id, sid=session_id)
        response = await http.client.request(
            method, url, headers={"Authorization": f"Bearer {http.sfu.app_secret}"}
        )
        expect(response, 404, "not_found")
    for method, path, allowed in [
        # GET .../sessions/new is GET session "new" (410), so this path takes three methods
        ("DELETE", "/v1/apps/{app}/sessions/new", {"POST", "GET", "HEAD"}),
        ("GET", "/apps/{app}/sessions/{sid}/tracks/new", {"POST"}),
        ("POST", "/v1/apps/{app}/sessions/{sid}/renegotiate", {"PUT"}),
        ("PATCH", "/v1/apps/{app}/sessions/{sid}", {"GET", "HEAD"}),
        ("DELETE", "/v1/apps/{app}/sessions/{sid}", {"GET", "HEAD"}),
        ("GET", "/v1/turn/keys/{app}/credentials/generate-ice-servers", {"POST"}),
        ("POST", "/openapi.json", {"GET", "HEAD"}),
    ]:
        url = http.origin + path.format(app=http.sfu.app_id, sid=session_id)
        response = await http.client.request(
            method, url, headers={"Authorization": f"Bearer {http.sfu.app_secret}"}
        )
        expect(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    await still_serves(http)


# -- concurrency -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_racing_requests_on_one_session():
    async with (
        LocalSFU(SfuConfig(session_reuse_s=0.3)) as sfu,
        httpx.AsyncClient(timeout=30) as raw,
    ):
        http = Http(sfu, raw)
        api = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
        baseline = len(sfu.registry)
        packets = encode_tone(440, 25)
        publisher, subscriber = Client(api), Client(api, tap=True)
        try:
            await publisher.open()
            await subscriber.open()
            await publisher.push_many(
                [(OpusReplayTrack(packets), "a"), (OpusReplayTrack(packets), "b")]
            )
            first = await pull_when_sending(subscriber, publisher.session_id, "a")
            await subscriber.answer(first["sessionDescription"])
            sid = subscriber.session_id
            session = sfu.registry.get(sid)
            await wait_until(lambda: session.state is SessionState.CONNECTED, what="connected")
            mid_a = first["tracks"][0]["mid"]

            pull_b = {
                "tracks": [
                    {"location": "remote", "sessionId": publisher.session_id, "trackName": "b"}
                ]
            }
            requests: list[Callable[[], Any]] = []
            for index in range(5):
                requests.append(lambda: http.send("POST", S + "/tracks/new", pull_b, sid=sid))
                mids = [{"mid": mid_a}] if index == 0 else [{"mid": str(50 + index)}]
                requests.append(
                    lambda mids=mids: http.send(
                        "PUT", S + "/tracks/close", {"tracks": mids, "force": True}, sid=sid
                    )
                )
            responses = await asyncio.gather(*(r() for r in requests))
            statuses = [r.status_code for r in responses]
            assert set(statuses) <= {200, 406}, [(r.status_code, r.text[:200]) for r in responses]
            for response in responses:
                expect(response, response.status_code)
            pulls = [r.json() for r in responses[0::2] if r.status_code == 200]
            refused = [r.json() for r in responses[0::2] if r.status_code == 406]
            # the first pull makes an offer; the others overlap it and are refused
            assert len(pulls) == 1 and pulls[0]["requiresImmediateRenegotiation"] is True
            assert all(r["errorCode"] == "invalid_session_description" for r in refused)
            closes = [r.json() for r in responses[1::2]]
            assert all(r.status_code == 200 for r in responses[1::2])
            assert closes[0]["tracks"] == [{"mid": mid_a, "trackName": "a"}]
            assert all(c["tracks"][0]["errorCode"] == "close_track_error" for c in closes[1:])

            # concurrent renegotiations with the one answer: exactly one is applied
            await subscriber.pc.setRemoteDescription(
                RTCSessionDescription(**pulls[0]["sessionDescription"])
            )
            await subscriber.pc.setLocalDescription(await subscriber.pc.createAnswer())
            answer = {
                "sessionDescription": {"type": "answer", "sdp": subscriber.pc.localDescription.sdp}
            }
            renegotiated = await asyncio.gather(
                *(http.send("PUT", S + "/renegotiate", answer, sid=sid) for _ in range(4))
            )
            assert sorted(r.status_code for r in renegotiated) == [200, 406, 406, 406]
            mid_b = pulls[0]["tracks"][0]["mid"]
            await wait_until(lambda: len(subscriber.received[mid_b]) >= 10, what="10 packets")

            # racing sessions/new with bad offers leaves no session behind
            created = len(sfu.registry)
            bad = {"sessionDescription": {"type": "offer", "sdp": "v=0\r\nm=audio 9 RTP/AVP 0\r\n"}}
            results = await asyncio.gather(
                *(http.send("POST", "/apps/{app}/sessions/new", bad) for _ in range(10))
            )
            assert [r.status_code for r in results] == [406] * 10
            assert len(sfu.registry) == created

            # racing GETs and a mix of bad requests on the one session: never a 5xx
            mixed = await asyncio.gather(
                *(http.send("GET", S, sid=sid) for _ in range(5)),
                *(http.send("POST", S + "/tracks/new", content=b"{", sid=sid) for _ in range(3)),
                *(http.send("PUT", S + "/tracks/close", {"tracks": []}, sid=sid) for _ in range(3)),
            )
            assert [r.status_code for r in mixed] == [200] * 5 + [400] * 3 + [406] * 3
        finally:
            await asyncio.gather(publisher.close(), subscriber.close())
        await wait_until(
            lambda: len(sfu.registry) == baseline,
            what=f"back to {baseline} sessions",
        )
        await media_flows(api)
        await api.aclose()


# -- the barrage, then real media -------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_real_media_after_the_barrage(api: Api, http: Http):
    session_id = await http.new_session()
    offer = await make_offer()
    hostile = hostile_descriptions(offer, await make_offer("video"))
    barrage = []
    for method, path, body in DECODING_ERRORS:
        if isinstance(body, bytes):
            barrage.append(http.send(method, path, content=body, sid=session_id))
        else:
            barrage.append(http.send(method, path, body, sid=session_id))
    for method, path, body in INVALID_PARAMS:
        barrage.append(http.send(method, path, body, sid=session_id))
    for description in hostile.values():
        barrage.append(
            http.send("POST", "/apps/{app}/sessions/new", {"sessionDescription": description})
        )
    barrage.append(http.send("POST", "/apps/{app}/sessions/new", content=b"x" * (2 * 1024 * 1024)))
    barrage.append(http.send("GET", S, auth=False, sid=session_id))
    barrage.append(http.send("GET", S, sid="gone"))
    responses = await asyncio.gather(*barrage)  # all at once
    for response in responses:
        assert 400 <= response.status_code < 500, (
            response.request.url,
            response.status_code,
            response.text[:200],
        )
        expect(response, response.status_code)
    await media_flows(api)


# -- bugs in files this suite does not own ----------------------------------------------------


@pytest.mark.timeout(30)
async def test_establish_with_an_offer_without_datachannels_leaves_session_usable(
    api: Api, http: Http
):
    client = Client(api)
    try:
        await client.open()
        client.pc.addTransceiver(OpusReplayTrack(encode_tone(300, 10)), direction="sendonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        body = {"sessionDescription": {"type": "offer", "sdp": client.pc.localDescription.sdp}}
        response = await http.send(
            "POST", S + "/datachannels/establish", body, sid=client.session_id
        )
        if response.status_code == 200:
            result = expect(response, 200)
            description = result["sessionDescription"]
            # an SDP the client is told to renegotiate with must be an offer it can answer
            assert result["requiresImmediateRenegotiation"] == (description["type"] == "offer")
            await client.pc.setRemoteDescription(RTCSessionDescription(**description))
        else:
            expect(response, 406, "invalid_session_description")
            await client.pc.setLocalDescription(RTCSessionDescription(type="rollback", sdp=""))
        # and the session still takes the client's next offer
        client.pc.addTransceiver(OpusReplayTrack(encode_tone(300, 10)), direction="sendonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        mid = client.pc.getTransceivers()[-1].mid
        push = {
            "sessionDescription": {"type": "offer", "sdp": client.pc.localDescription.sdp},
            "tracks": [{"location": "local", "mid": mid, "trackName": "second"}],
        }
        expect(await http.send("POST", S + "/tracks/new", push, sid=client.session_id), 200)
    finally:
        await client.close()


async def make_offer_with_datachannel() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "mutation",
    ["no direction attribute", "m=application line removed", "m=audio line removed"],
)
async def test_offers_aiortc_cannot_answer_are_406_not_500(http: Http, mutation: str):
    if mutation == "no direction attribute":
        sdp = without(await make_offer(), "a=sendonly")
    elif mutation == "m=application line removed":
        sdp = without(await make_offer_with_datachannel(), "m=application")
    else:
        sdp = without(await make_offer_with_datachannel(), "m=audio")
    description = {"type": "offer", "sdp": sdp}
    sessions_before = len(http.sfu.registry)
    response = await http.send(
        "POST", "/apps/{app}/sessions/new", {"sessionDescription": description}
    )
    assert len(http.sfu.registry) == sessions_before + (
        response.status_code == 201
    )  # no leak either way
    assert response.status_code in (201, 406), response.text
    session_id = await http.new_session()
    push = {
        "sessionDescription": description,
        "tracks": [{"location": "local", "mid": "0", "trackName": "a"}],
    }
    response = await http.send("POST", S + "/tracks/new", push, sid=session_id)
    assert response.status_code in (200, 406), response.text
    if response.status_code == 406:  # a refused offer leaves the session ready for the next one
        good = {
            "sessionDescription": {"type": "offer", "sdp": await make_offer()},
            "tracks": [{"location": "local", "mid": "0", "trackName": "a"}],
        }
        expect(await http.send("POST", S + "/tracks/new", good, sid=session_id), 200)
