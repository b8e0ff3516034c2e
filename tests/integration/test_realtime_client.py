"""RealtimeClient and TurnClient against a real HTTP server on 127.0.0.1 that plays
scripted Cloudflare responses (fault injection: errors, item failures, delays)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from media.backoff import Backoff
from media.realtime import (
    DataChannelRequest,
    IceServer,
    IceServers,
    InvalidParams,
    NewSessionResult,
    PeerNotReady,
    RealtimeClient,
    RealtimeError,
    RealtimeItemError,
    SessionDescription,
    SessionGone,
    SessionState,
    TrackLocator,
    TrackRequest,
    TrackResult,
    TracksResult,
    TransientError,
    TurnClient,
    Unauthorized,
)
from media.realtime.locks import SessionLocks

pytestmark = pytest.mark.timeout(5)

APP_ID = "app-1"
SECRET = "s3cr3t-app-secret-0123456789abcdef"
TURN_KEY = "turn-key-1"
TURN_TOKEN = "turn-api-token-fedcba9876543210"
APP = f"/v1/apps/{APP_ID}"
FAST = Backoff(attempts=3, initial_s=0.001, max_s=0.005, deadline_s=2.0)
OFFER = SessionDescription("offer", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
ANSWER = SessionDescription("answer", "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\n")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)
    text: str | None = None  # a raw (non-JSON) body instead of `body`

    def response(self) -> web.Response:
        if self.text is not None:
            return web.Response(status=self.status, text=self.text, content_type="text/html")
        if self.status == 204:
            return web.Response(status=204)
        return web.json_response(self.body, status=self.status)


Handler = Callable[[Recorded], Awaitable[Reply]]


class FakeCloudflare:
    """Records every request; answers from per-route scripts, then from `handler`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.scripts: dict[tuple[str, str], list[Reply]] = defaultdict(list)
        self.handler: Handler | None = None
        self.base_url = ""

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self.scripts[(method, path)].extend(replies)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            json.loads(raw) if raw else None,
        )
        self.requests.append(recorded)
        queue = self.scripts.get((request.method, request.path))
        if queue:
            return queue.pop(0).response()
        if self.handler is not None:
            return (await self.handler(recorded)).response()
        return Reply(404, {"errorCode": "not_found", "errorDescription": "unscripted"}).response()


@pytest.fixture
async def cf() -> AsyncIterator[FakeCloudflare]:
    fake = FakeCloudflare()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.base_url = str(server.make_url("/v1"))
    yield fake
    await server.close()


@pytest.fixture
async def client(cf: FakeCloudflare) -> AsyncIterator[RealtimeClient]:
    async with RealtimeClient(cf.base_url, APP_ID, SECRET, retry=FAST) as realtime:
        yield realtime


def pull(session_id: str, track_name: str) -> TrackRequest:
    return TrackRequest.pull(TrackLocator(session_id, track_name))


def not_found(session_id: str, track_name: str) -> dict[str, str]:
    return {
        "mid": "",
        "sessionId": session_id,
        "trackName": track_name,
        "errorCode": "not_found_track_error",
        "errorDescription": "Track not found",
    }


def sfu_offer(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requiresImmediateRenegotiation": True,
        "tracks": tracks,
        "sessionDescription": {"type": "offer", "sdp": "v=0 sfu"},
    }


async def answer_offer(offer: SessionDescription) -> SessionDescription:
    assert offer.type == "offer"
    return ANSWER


# --- request shapes ----------------------------------------------------------------------


async def test_new_session_path_headers_query_and_body(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/new",
        Reply(201, {"sessionId": "s1", "sessionDescription": ANSWER.to_json(), "extra": 1}),
    )
    result = await client.new_session(OFFER, correlation_id="room:lobby", thirdparty=True)
    assert result == NewSessionResult("s1", ANSWER)
    (request,) = cf.requests
    assert request.path == "/v1/apps/app-1/sessions/new"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.query == {"thirdparty": "true", "correlationId": "room:lobby"}
    assert request.body == {"sessionDescription": {"type": "offer", "sdp": OFFER.sdp}}


async def test_new_session_without_offer_sends_no_body(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script("POST", f"{APP}/sessions/new", Reply(201, {"sessionId": "s1"}))
    assert await client.new_session() == NewSessionResult("s1", None)
    assert cf.requests[0].body is None and cf.requests[0].query == {}


async def test_push_body_is_offer_plus_local_mid_and_track_name(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/s1/tracks/new",
        Reply(
            200,
            {
                "requiresImmediateRenegotiation": False,
                "tracks": [{"mid": "0", "trackName": "mic"}],
                "sessionDescription": ANSWER.to_json(),
            },
        ),
    )
    result = await client.new_tracks("s1", [TrackRequest.push("mic", "0")], OFFER)
    assert cf.requests[0].body == {
        "sessionDescription": {"type": "offer", "sdp": OFFER.sdp},
        "tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
    }
    assert result == TracksResult((TrackResult("0", "mic"),), ANSWER, False)


async def test_pull_body_is_remote_session_and_track_name_without_offer(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/sub/tracks/new",
        Reply(200, sfu_offer([{"mid": "1", "sessionId": "pub", "trackName": "mic"}])),
    )
    result = await client.new_tracks("sub", [pull("pub", "mic")])
    assert cf.requests[0].body == {
        "tracks": [{"location": "remote", "sessionId": "pub", "trackName": "mic"}]
    }
    assert result.requires_immediate_renegotiation
    assert result.session_description == SessionDescription("offer", "v=0 sfu")
    assert result.tracks == (TrackResult("1", "mic", "pub"),)


async def test_renegotiate_puts_the_answer(cf: FakeCloudflare, client: RealtimeClient) -> None:
    cf.script("PUT", f"{APP}/sessions/sub/renegotiate", Reply(200, {}))
    await client.renegotiate("sub", ANSWER)
    assert cf.requests[0].body == {"sessionDescription": {"type": "answer", "sdp": ANSWER.sdp}}
    with pytest.raises(ValueError):
        await client.renegotiate("sub", OFFER)


async def test_on_offer_answers_the_sfu_offer_inside_the_call(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/sub/tracks/new",
        Reply(200, sfu_offer([{"mid": "1", "sessionId": "pub", "trackName": "mic"}])),
    )
    cf.script("PUT", f"{APP}/sessions/sub/renegotiate", Reply(200, {}))
    result = await client.new_tracks("sub", [pull("pub", "mic")], on_offer=answer_offer)
    assert [r.path.rsplit("/", 1)[-1] for r in cf.requests] == ["new", "renegotiate"]
    assert cf.requests[1].body == {"sessionDescription": ANSWER.to_json()}
    assert result.session_description is None and not result.requires_immediate_renegotiation


async def test_update_and_close_bodies(cf: FakeCloudflare, client: RealtimeClient) -> None:
    cf.script(
        "PUT",
        f"{APP}/sessions/sub/tracks/update",
        Reply(200, {"tracks": [{"mid": "7", "sessionId": "pub", "trackName": "cam"}]}),
    )
    cf.script(
        "PUT",
        f"{APP}/sessions/sub/tracks/close",
        Reply(200, {"tracks": [{"mid": "7"}], "sessionDescription": ANSWER.to_json()}),
    )
    await client.update_tracks("sub", [TrackRequest.pull(TrackLocator("pub", "cam"), mid="7")])
    closed = await client.close_tracks("sub", ["7"], OFFER)
    assert cf.requests[0].body == {
        "tracks": [{"location": "remote", "mid": "7", "sessionId": "pub", "trackName": "cam"}]
    }
    assert cf.requests[1].body == {
        "tracks": [{"mid": "7"}],
        "force": False,
        "sessionDescription": OFFER.to_json(),
    }
    assert closed.tracks == (TrackResult("7"),) and closed.session_description == ANSWER


async def test_close_validation_happens_locally(cf: FakeCloudflare, client: RealtimeClient) -> None:
    with pytest.raises(ValueError, match="at least one mid"):
        await client.close_tracks("s1", [], force=True)
    with pytest.raises(ValueError, match="offer"):
        await client.close_tracks("s1", ["0"])
    with pytest.raises(ValueError, match="cannot be split"):
        await client.close_tracks("s1", [str(i) for i in range(65)], OFFER)
    assert cf.requests == []


async def test_get_session_decodes_tracks_and_datachannels_ignoring_unknown_keys(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "GET",
        f"{APP}/sessions/s1",
        Reply(
            200,
            {
                "tracks": [
                    {"location": "local", "mid": "0", "trackName": "mic", "status": "active"},
                    {
                        "location": "remote",
                        "mid": "1",
                        "sessionId": "pub",
                        "trackName": "mic",
                        "status": "waiting",
                        "simulcast": {"preferredRid": "h"},
                    },
                ],
                "dataChannels": [
                    {
                        "location": "remote",
                        "sessionId": "pub",
                        "dataChannelName": "chat",
                        "id": 2,
                        "status": "initializing",
                    }
                ],
                "futureField": True,
            },
        ),
    )
    state = await client.get_session("s1")
    assert cf.requests[0].path == "/v1/apps/app-1/sessions/s1"
    assert [(t.location, t.mid, t.track_name, t.session_id, t.status) for t in state.tracks] == [
        ("local", "0", "mic", None, "active"),
        ("remote", "1", "mic", "pub", "waiting"),
    ]
    (channel,) = state.data_channels
    assert (channel.data_channel_name, channel.id, channel.status) == ("chat", 2, "initializing")
    assert SessionState.from_json(state.to_json()) == state


async def test_datachannel_bodies(cf: FakeCloudflare, client: RealtimeClient) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/s1/datachannels/establish",
        Reply(
            200,
            {
                "requiresImmediateRenegotiation": True,
                "dataChannel": {"dataChannelName": "server-events", "id": 0},
                "sessionDescription": {"type": "offer", "sdp": "v=0 dc"},
            },
        ),
    )
    cf.script("PUT", f"{APP}/sessions/s1/renegotiate", Reply(200, {}))
    cf.script(
        "POST",
        f"{APP}/sessions/s1/datachannels/new",
        Reply(
            200,
            {
                "dataChannels": [
                    {"location": "remote", "sessionId": "pub", "dataChannelName": "chat", "id": 3}
                ]
            },
        ),
    )
    cf.script(
        "PUT",
        f"{APP}/sessions/s1/datachannels/close",
        Reply(
            200,
            {
                "dataChannels": [
                    {
                        "id": 3,
                        "errorCode": "close_track_error",
                        "errorDescription": "already closed",
                    }
                ]
            },
        ),
    )
    established = await client.datachannels_establish("s1", on_offer=answer_offer)
    created = await client.datachannels_new("s1", [DataChannelRequest.pull("pub", "chat")])
    closed = await client.datachannels_close("s1", [3])
    bodies = [r.body for r in cf.requests]
    assert bodies[0] == {"dataChannel": {"location": "remote", "dataChannelName": "server-events"}}
    assert bodies[1] == {"sessionDescription": ANSWER.to_json()}
    assert bodies[2] == {
        "dataChannels": [{"location": "remote", "dataChannelName": "chat", "sessionId": "pub"}]
    }
    assert bodies[3] == {"dataChannels": [{"id": 3}]}
    assert established.data_channel is not None and established.data_channel.id == 0
    assert established.session_description is None
    assert created.data_channels[0].id == 3
    assert closed.data_channels[0].error == RealtimeItemError("close_track_error", "already closed")


# --- errors and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "exc_type"),
    [
        (401, "unauthorized", Unauthorized),
        (406, "invalid_params", InvalidParams),
        (406, "invalid_session_description", InvalidParams),
        (410, "session_error", SessionGone),
        (400, "decoding_error", RealtimeError),
    ],
)
async def test_client_errors_map_to_exceptions_and_are_not_retried(
    cf: FakeCloudflare,
    client: RealtimeClient,
    status: int,
    code: str,
    exc_type: type[RealtimeError],
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/s1/tracks/new",
        Reply(status, {"errorCode": code, "errorDescription": f"about {code}"}),
        Reply(200, {"tracks": []}),
    )
    with pytest.raises(exc_type) as raised:
        await client.new_tracks("s1", [pull("pub", "mic")])
    assert type(raised.value) is exc_type
    assert (raised.value.status, raised.value.error_code) == (status, code)
    assert raised.value.error_description == f"about {code}"
    assert str(status) in str(raised.value) and code in str(raised.value)
    assert len(cf.requests) == 1


@pytest.mark.parametrize("first", [425, 500, 503])
async def test_425_and_5xx_are_retried_until_success(
    cf: FakeCloudflare, client: RealtimeClient, first: int
) -> None:
    code = "session_error" if first == 425 else "retryable_transient_error"
    cf.script(
        "GET",
        f"{APP}/sessions/s1",
        Reply(first, {"errorCode": code, "errorDescription": "later"}),
        Reply(200, {"tracks": []}),
    )
    assert await client.get_session("s1") == SessionState(())
    assert len(cf.requests) == 2


@pytest.mark.parametrize("first", [425, 500, 503])
async def test_changes_to_a_session_are_sent_once(
    cf: FakeCloudflare, client: RealtimeClient, first: int
) -> None:
    # They run under the session's lock: no sleeping there; the caller's reconciler retries.
    code = "session_error" if first == 425 else "retryable_transient_error"
    reply = Reply(first, {"errorCode": code, "errorDescription": "later"})
    cf.handler = _always(reply)
    with pytest.raises(RealtimeError) as raised:
        await client.new_tracks("s1", [TrackRequest.push("mic", "0")], OFFER)
    assert raised.value.error_code == code
    with pytest.raises(RealtimeError):
        await client.renegotiate("s1", ANSWER)
    with pytest.raises(RealtimeError):
        await client.close_tracks("s1", ["0"], force=True)
    assert len(cf.requests) == 3


async def test_probe_is_one_short_request(cf: FakeCloudflare, client: RealtimeClient) -> None:
    cf.handler = _always(Reply(503, {"errorCode": "backend_error", "errorDescription": "x"}))
    with pytest.raises(TransientError):
        await client.probe_session("s1", timeout_s=0.5)
    assert len(cf.requests) == 1
    cf.handler = _always(Reply(410, {"errorCode": "session_error", "errorDescription": "gone"}))
    with pytest.raises(SessionGone):
        await client.probe_session("s1", timeout_s=0.5)


async def test_500_then_503_then_success(cf: FakeCloudflare, client: RealtimeClient) -> None:
    cf.script(
        "GET",
        f"{APP}/sessions/s1",
        Reply(500, {"errorCode": "internal_error", "errorDescription": "x"}),
        Reply(503, {"errorCode": "temporarily_unavailable_error", "errorDescription": "y"}),
        Reply(200, {"tracks": []}),
    )
    assert await client.get_session("s1") == SessionState(())
    assert len(cf.requests) == 3


async def test_retries_exhausted_raise_transient_error_with_code(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.handler = _always(Reply(500, {"errorCode": "internal_error", "errorDescription": "boom"}))
    with pytest.raises(TransientError) as raised:
        await client.get_session("s1")
    assert (raised.value.status, raised.value.error_code) == (500, "internal_error")
    assert len(cf.requests) == FAST.attempts


async def test_425_exhausted_raises_peer_not_ready(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.handler = _always(Reply(425, {"errorCode": "session_error", "errorDescription": "wait"}))
    with pytest.raises(PeerNotReady):
        await client.get_session("s1")
    assert len(cf.requests) == FAST.attempts


async def test_deadline_bounds_retries(cf: FakeCloudflare) -> None:
    cf.handler = _always(Reply(503, {"errorCode": "backend_error", "errorDescription": "x"}))
    policy = Backoff(attempts=100, initial_s=0.05, max_s=0.05, deadline_s=0.3)
    async with RealtimeClient(cf.base_url, APP_ID, SECRET, retry=policy) as realtime:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransientError):
            await realtime.get_session("s1")
        assert asyncio.get_running_loop().time() - started < 0.6
    assert 2 <= len(cf.requests) < 100


async def test_non_json_error_body_names_status_and_snippet(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>" + "x" * 1000 + "</body></html>"
    cf.handler = _always(Reply(502, text=page))
    with pytest.raises(TransientError) as raised:
        await client.get_session("s1")
    message = str(raised.value)
    assert "HTTP 502" in message and "Bad Gateway" in message
    assert len(message) < 400
    assert raised.value.error_code is None and raised.value.status == 502


async def test_2xx_with_top_level_error_code_raises(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "GET",
        f"{APP}/sessions/s1",
        Reply(200, {"errorCode": "invalid_params", "errorDescription": "odd"}),
    )
    with pytest.raises(RealtimeError) as raised:
        await client.get_session("s1")
    assert raised.value.error_code == "invalid_params"
    assert len(cf.requests) == 1


async def test_transport_error_is_retried_then_raised_as_transient(closed_port: int) -> None:
    base = f"http://127.0.0.1:{closed_port}/v1"
    async with RealtimeClient(base, APP_ID, SECRET, retry=FAST) as realtime:
        with pytest.raises(TransientError) as raised:
            await realtime.new_session()
    assert raised.value.status is None
    assert "ConnectError" in str(raised.value)


# --- per-item results ---------------------------------------------------------------------


async def test_not_found_pull_is_returned_at_once(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    path = f"{APP}/sessions/sub/tracks/new"
    cf.script(
        "POST",
        path,
        Reply(200, {"requiresImmediateRenegotiation": False, "tracks": [not_found("pub", "mic")]}),
        Reply(200, sfu_offer([{"mid": "3", "sessionId": "pub", "trackName": "mic"}])),
    )
    result = await client.new_tracks("sub", [pull("pub", "mic")])
    assert len(cf.calls("POST", path)) == 1
    (track,) = result.tracks
    assert track.error == RealtimeItemError("not_found_track_error", "Track not found")
    assert isinstance(track.error, RealtimeError)


async def test_mixed_items_are_returned_per_item_without_retry_while_sdp_is_pending(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script(
        "POST",
        f"{APP}/sessions/sub/tracks/new",
        Reply(
            200,
            sfu_offer(
                [
                    {"mid": "1", "sessionId": "pub", "trackName": "mic"},
                    {
                        "mid": "",
                        "sessionId": "pub",
                        "trackName": "cam",
                        "errorCode": "empty_track_error",
                        "errorDescription": "no media",
                    },
                    not_found("pub", "screen"),
                ]
            ),
        ),
    )
    result = await client.new_tracks(
        "sub", [pull("pub", "mic"), pull("pub", "cam"), pull("pub", "screen")]
    )
    assert len(cf.requests) == 1
    ok, empty, missing = result.tracks
    assert ok == TrackResult("1", "mic", "pub")
    assert empty.mid is None and empty.error == RealtimeItemError("empty_track_error", "no media")
    assert missing.error is not None and missing.error.error_code == "not_found_track_error"
    assert result.failed == (empty, missing)
    assert result.session_description is not None


# --- batching ------------------------------------------------------------------------------


async def test_130_pulls_go_in_three_negotiated_batches(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    async def handler(request: Recorded) -> Reply:
        if request.path.endswith("/renegotiate"):
            return Reply(200, {})
        tracks = [
            {"mid": str(i), "sessionId": t["sessionId"], "trackName": t["trackName"]}
            for i, t in enumerate(request.body["tracks"])
        ]
        return Reply(200, sfu_offer(tracks))

    cf.handler = handler
    requests = [pull(f"pub{i}", "mic") for i in range(130)]
    result = await client.new_tracks("sub", requests, on_offer=answer_offer)
    kinds = [r.path.rsplit("/", 1)[-1] for r in cf.requests]
    assert kinds == ["new", "renegotiate"] * 3
    sizes = [len(r.body["tracks"]) for r in cf.requests if r.path.endswith("/tracks/new")]
    assert sizes == [64, 64, 2]
    assert [t.session_id for t in result.tracks] == [f"pub{i}" for i in range(130)]


async def test_more_than_64_tracks_need_on_offer_and_no_offer(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    pulls = [pull(f"pub{i}", "mic") for i in range(65)]
    with pytest.raises(ValueError, match="on_offer"):
        await client.new_tracks("sub", pulls)
    pushes = [TrackRequest.push(f"t{i}", str(i)) for i in range(65)]
    with pytest.raises(ValueError, match="cannot be split"):
        await client.new_tracks("pub", pushes, OFFER, on_offer=answer_offer)
    with pytest.raises(ValueError, match="only pushes or only pulls"):
        await client.new_tracks("s", [TrackRequest.push("a", "0"), pull("pub", "b")], OFFER)
    assert cf.requests == []


async def test_130_forced_closes_go_in_three_requests(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    async def handler(request: Recorded) -> Reply:
        return Reply(200, {"tracks": request.body["tracks"]})

    cf.handler = handler
    mids = [str(i) for i in range(130)]
    result = await client.close_tracks("s1", mids, force=True)
    assert [len(r.body["tracks"]) for r in cf.requests] == [64, 64, 2]
    assert all(r.body["force"] is True and "sessionDescription" not in r.body for r in cf.requests)
    assert [t.mid for t in result.tracks] == mids


# --- serialization per session -------------------------------------------------------------


def _overlap_probe(cf: FakeCloudflare, hold_s: float) -> dict[str, int]:
    """Handler that holds each request `hold_s` and records peak concurrency per session."""
    active: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    async def handler(request: Recorded) -> Reply:
        session = request.path.split("/")[5]
        active[session] += 1
        peak[session] = max(peak[session], active[session])
        peak["*"] = max(peak["*"], sum(active.values()))
        await asyncio.sleep(hold_s)
        active[session] -= 1
        return Reply(200, {"tracks": []} if "tracks" in request.path else {})

    cf.handler = handler
    return peak


async def test_calls_on_one_session_never_overlap(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    peak = _overlap_probe(cf, 0.05)
    await asyncio.gather(
        client.new_tracks("s1", [pull("pub", "a")]),
        client.update_tracks("s1", [pull("pub", "b")]),
        client.close_tracks("s1", ["0"], force=True),
        client.renegotiate("s1", ANSWER),
    )
    assert len(cf.requests) == 4
    assert peak["s1"] == 1


async def test_calls_on_different_sessions_overlap(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    peak = _overlap_probe(cf, 0.1)
    await asyncio.gather(
        client.new_tracks("s1", [pull("pub", "a")]),
        client.new_tracks("s2", [pull("pub", "a")]),
    )
    assert peak["s1"] == peak["s2"] == 1
    assert peak["*"] == 2


async def test_negotiation_holds_the_session_across_calls(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    _overlap_probe(cf, 0.01)
    inside = asyncio.Event()

    async def exchange() -> None:
        async with client.negotiation("s1"):
            await client.new_tracks("s1", [pull("pub", "a")])
            inside.set()
            await asyncio.sleep(0.05)  # e.g. applying the SFU offer to the peer connection
            await client.renegotiate("s1", ANSWER)

    async def intruder() -> None:
        await inside.wait()
        await client.new_tracks("s1", [pull("pub", "b")])

    await asyncio.gather(exchange(), intruder())
    assert [r.path.rsplit("/", 1)[-1] for r in cf.requests] == ["new", "renegotiate", "new"]


async def test_session_locks_are_dropped_when_idle() -> None:
    locks = SessionLocks()
    async with locks.hold("a"), locks.hold("a"):  # reentrant for the holding task
        assert len(locks) == 1
    assert len(locks) == 0

    order: list[str] = []

    async def use(tag: str) -> None:
        async with locks.hold("b"):
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")

    await asyncio.gather(use("x"), use("y"))
    assert order == ["x+", "x-", "y+", "y-"]
    assert len(locks) == 0


# --- secrets -------------------------------------------------------------------------------


async def test_app_secret_never_leaks(
    cf: FakeCloudflare, caplog: pytest.LogCaptureFixture, closed_port: int
) -> None:
    caplog.set_level(logging.DEBUG)

    async def echo_headers(request: Recorded) -> Reply:
        # Worst case: a proxy that echoes the request (with its Authorization) in the error.
        echoed = json.dumps(request.headers)
        if request.path.endswith("/sessions/new"):
            return Reply(401, {"errorCode": "unauthorized", "errorDescription": echoed})
        return Reply(502, text=f"<pre>{echoed}</pre>")

    cf.handler = echo_headers
    errors: list[BaseException] = []
    async with RealtimeClient(cf.base_url, APP_ID, SECRET, retry=FAST) as realtime:
        for call in (realtime.new_session(), realtime.get_session("s1")):
            with pytest.raises(RealtimeError) as raised:
                await call
            errors.append(raised.value)
        texts = [repr(realtime), str(realtime)]
    async with RealtimeClient(
        f"http://127.0.0.1:{closed_port}/v1", APP_ID, SECRET, retry=FAST
    ) as offline:
        with pytest.raises(TransientError) as raised:
            await offline.new_session()
        errors.append(raised.value)
    async with TurnClient(cf.base_url, TURN_KEY, TURN_TOKEN, retry=FAST) as turn:
        with pytest.raises(RealtimeError) as raised:
            await turn.generate_ice_servers()
        errors.append(raised.value)
        texts.append(repr(turn))

    assert any(SECRET in json.dumps(r.headers) for r in cf.requests)  # it was really sent
    for error in errors:
        chain = [error, error.__cause__, error.__context__]
        texts += [str(e) for e in chain] + [repr(e) for e in chain] + [repr(error.args)]
        if isinstance(error.__cause__, Exception) and hasattr(error.__cause__, "request"):
            texts.append(repr(error.__cause__.request))
            texts.append(repr(error.__cause__.request.headers))
    texts.append(caplog.text)
    texts += [repr(record.__dict__) for record in caplog.records]
    for text in texts:
        assert SECRET not in text and TURN_TOKEN not in text


# --- TURN ----------------------------------------------------------------------------------

TURN_SERVERS = [
    {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
    {
        "urls": [
            "turn:turn.cloudflare.com:3478?transport=udp",
            "turn:turn.cloudflare.com:53?transport=udp",
            "turns:turn.cloudflare.com:5349?transport=tcp",
        ],
        "username": "user-1",
        "credential": "cred-1",
    },
]


async def test_turn_generate_ice_servers_list_shape(cf: FakeCloudflare) -> None:
    path = f"/v1/turn/keys/{TURN_KEY}/credentials/generate-ice-servers"
    cf.script("POST", path, Reply(201, {"iceServers": TURN_SERVERS}))
    async with TurnClient(cf.base_url, TURN_KEY, TURN_TOKEN, retry=FAST) as turn:
        servers = await turn.generate_ice_servers(3600)
    (request,) = cf.requests
    assert request.path == path and request.body == {"ttl": 3600}
    assert request.headers["Authorization"] == f"Bearer {TURN_TOKEN}"
    assert len(servers.servers) == 2 and servers.username == "user-1"
    assert servers.servers[1].credential == "cred-1"
    assert "cred-1" not in repr(servers)
    assert IceServers.from_json(servers.to_json()) == servers


async def test_turn_legacy_single_object_shape(cf: FakeCloudflare) -> None:
    path = f"/v1/turn/keys/{TURN_KEY}/credentials/generate"
    legacy = {"urls": "turn:turn.cloudflare.com:3478", "username": "u", "credential": "c"}
    cf.script("POST", path, Reply(201, {"iceServers": legacy}))
    async with TurnClient(cf.base_url, TURN_KEY, TURN_TOKEN, retry=FAST) as turn:
        servers = await turn.generate_ice_servers(60, legacy=True)
    assert servers == IceServers((IceServer(("turn:turn.cloudflare.com:3478",), "u", "c"),))


def test_for_browser_drops_port_53_urls() -> None:
    servers = IceServers.from_json({"iceServers": TURN_SERVERS})
    browser = servers.for_browser()
    assert browser.servers[0].urls == ("stun:stun.cloudflare.com:3478",)
    assert browser.servers[1].urls == (
        "turn:turn.cloudflare.com:3478?transport=udp",
        "turns:turn.cloudflare.com:5349?transport=tcp",
    )
    assert browser.servers[1].username == "user-1"
    only_53 = IceServers((IceServer(("stun:[2606:4700::1]:53",)), IceServer(("turn:h:5353",))))
    assert only_53.for_browser() == IceServers((IceServer(("turn:h:5353",)),))


async def test_turn_revoke_expects_204(cf: FakeCloudflare) -> None:
    path = f"/v1/turn/keys/{TURN_KEY}/credentials/user-1/revoke"
    cf.script("POST", path, Reply(204))
    async with TurnClient(cf.base_url, TURN_KEY, TURN_TOKEN, retry=FAST) as turn:
        await turn.revoke("user-1")
    assert [(r.method, r.path, r.body) for r in cf.requests] == [("POST", path, None)]


# --- models --------------------------------------------------------------------------------


def test_models_round_trip_and_tolerate_unknown_keys() -> None:
    raw = {
        "requiresImmediateRenegotiation": True,
        "sessionDescription": {"type": "offer", "sdp": "v=0", "x": 1},
        "tracks": [
            {"mid": "1", "sessionId": "p", "trackName": "t", "simulcast": {}},
            {
                "mid": "",
                "trackName": "u",
                "errorCode": "not_found_track_error",
                "errorDescription": "nope",
            },
        ],
        "unknown": [1, 2],
    }
    result = TracksResult.from_json(raw)
    assert result.tracks[1] == TrackResult(
        None, "u", None, RealtimeItemError("not_found_track_error", "nope")
    )
    assert TracksResult.from_json(result.to_json()) == result
    assert TrackRequest.from_json(pull("p", "t").to_json()) == pull("p", "t")
    with pytest.raises(ValueError):
        TrackRequest("remote", "t")  # a pull needs the publisher's session
    with pytest.raises(ValueError):
        NewSessionResult.from_json({"sessionDescription": None})


async def test_malformed_success_body_raises_realtime_error(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    cf.script("POST", f"{APP}/sessions/new", Reply(201, {"session": "no id"}))
    with pytest.raises(RealtimeError, match="unexpected response"):
        await client.new_session()


# --- helpers -------------------------------------------------------------------------------


def _always(reply: Reply) -> Handler:
    async def handler(_: Recorded) -> Reply:
        return reply

    return handler


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_create_that_may_have_happened_is_not_repeated(
    cf: FakeCloudflare, client: RealtimeClient
) -> None:
    # internal_error on tracks/new may have published the track: no blind retry.
    cf.script(
        "POST",
        f"{APP}/sessions/s1/tracks/new",
        Reply(500, {"errorCode": "internal_error", "errorDescription": "maybe"}),
        Reply(200, {"tracks": [{"mid": "0", "trackName": "mic"}]}),
    )
    with pytest.raises(TransientError) as raised:
        await client.new_tracks("s1", [TrackRequest.push("mic", "0")], OFFER)
    assert raised.value.error_code == "internal_error"
    assert len(cf.requests) == 1


async def test_a_create_that_never_connected_is_retried(closed_port: int, caplog) -> None:
    caplog.set_level(logging.INFO, logger="media.realtime")
    async with RealtimeClient(
        f"http://127.0.0.1:{closed_port}/v1", "app", "secret", retry=FAST
    ) as unreachable:
        with pytest.raises(TransientError) as raised:
            await unreachable.new_session()
    assert raised.value.sent is False
    retries = [r for r in caplog.records if "realtime retry op=sessions/new" in r.getMessage()]
    assert len(retries) == FAST.attempts  # judged retryable at every failed attempt
