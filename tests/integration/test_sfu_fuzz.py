"""Schema-driven fuzzing of the live local SFU with schemathesis, from its own /openapi.json.

The server runs on the test's event loop; schemathesis (synchronous, `requests`) runs in a
worker thread so the loop keeps serving. Every operation gets a bounded number of positive
and negative examples, derandomized so a failure reproduces run after run. Each response
must be no 5xx and must match the document: status, content type and body schema.

Sessions come from a pool so requests reach past the 410 of an unknown id: a fresh session,
a shared one that the fuzzer keeps changing (offers left pending, tracks closed), a connected
subscriber of a real aiortc publisher, or an unknown id. Generated pulls are sometimes
pointed at the real publisher's track so that they succeed and leave SFU offers behind.

Schemathesis cannot reach into SDP (a string to it), so a second test mutates a real aiortc
offer line by line and token by token, exhaustively and deterministically.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from media.sfu.api import build_app
from media.sfu.openapi import openapi_document
from media.sfu.registry import Registry
from media.sfu.session import SessionState
from tests.support.opus_source import OpusReplayTrack, encode_tone
from tests.support.rtc import Client

# Examples per operation and mode: 12 operations x 100 = 1,200 requests, ~15-20 s on 2 cores.
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
async def http_session(sfu):
    async with httpx.AsyncClient(timeout=30) as client:
        yield sfu, client


@dataclass
class Target:
    origin: str
    base_url: str
    app_id: str
    secret: str
    shared_session: str
    connected_session: str
    publisher_session: str
    track_name: str
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def fresh_session(self) -> str:
        response = self.http.post(
            f"{self.base_url}/apps/{self.app_id}/sessions/new", headers=self.auth, timeout=10
        )
        assert response.status_code == 201, response.text
        return response.json()["sessionId"]


def _point_at_publisher(body: Any, target: Target) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("tracks"), list):
        return
    for item in body["tracks"]:
        if isinstance(item, dict) and item.get("location") == "remote":
            item["sessionId"] = target.publisher_session
            item["trackName"] = target.track_name
            item.pop("mid", None)


def fuzz(target: Target) -> tuple[list[str], dict[str, int], int]:
    schema = schemathesis.openapi.from_url(target.origin + "/openapi.json")
    failures: list[str] = []
    statuses: dict[str, int] = {}
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {"keyId": target.app_id} if "keyId" in operation.path else {"appId": target.app_id}
        for mode, examples in EXAMPLES.items():
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
            )
            @given(
                case=strategy,
                which=st.sampled_from(["fresh", "shared", "connected", "unknown"]),
                aim=st.booleans(),
            )
            def run(case: Any, which: str, aim: bool) -> None:
                nonlocal calls
                if "sessionId" in (case.path_parameters or {}):
                    case.path_parameters["sessionId"] = {
                        "fresh": target.fresh_session,
                        "shared": lambda: target.shared_session,
                        "connected": lambda: target.connected_session,
                        "unknown": lambda: "0" * 32,
                    }[which]()
                if aim:
                    _point_at_publisher(case.body, target)
                response = case.call(
                    base_url=target.base_url, session=target.http, headers=target.auth, timeout=15
                )
                calls += 1
                key = (
                    f"{case.operation.method.upper()} {case.operation.path} {response.status_code}"
                )
                statuses[key] = statuses.get(key, 0) + 1
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"[{mode.value}] {operation.label}:\n{exc}")
    return failures, statuses, calls


@pytest.mark.timeout(150)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_schemathesis_against_the_live_server(sfu, api):
    publisher, subscriber = Client(api), Client(api)
    try:
        await publisher.open()
        await subscriber.open()
        await publisher.push(OpusReplayTrack(encode_tone(440, 25)), "mic")
        for _ in range(200):
            pulled = await api.ok(
                "POST",
                f"/sessions/{subscriber.session_id}/tracks/new",
                {
                    "tracks": [
                        {
                            "location": "remote",
                            "sessionId": publisher.session_id,
                            "trackName": "mic",
                        }
                    ]
                },
            )
            if "errorCode" not in pulled["tracks"][0]:
                break
            await asyncio.sleep(0.05)
        await subscriber.answer(pulled["sessionDescription"])
        connected = sfu.registry.get(subscriber.session_id)
        for _ in range(100):
            if connected.state is SessionState.CONNECTED:
                break
            await asyncio.sleep(0.05)
        assert connected.state is SessionState.CONNECTED
        shared = (await api.ok("POST", "/sessions/new"))["sessionId"]

        target = Target(
            origin=sfu.base_url.removesuffix("/v1"),
            base_url=sfu.base_url,
            app_id=sfu.app_id,
            secret=sfu.app_secret,
            shared_session=shared,
            connected_session=subscriber.session_id,
            publisher_session=publisher.session_id,
            track_name="mic",
        )
        started = time.monotonic()
        try:
            failures, statuses, calls = await asyncio.to_thread(fuzz, target)
        finally:
            target.http.close()
        elapsed = time.monotonic() - started
        print(f"\nfuzz: {calls} requests in {elapsed:.1f} s")
        for key in sorted(statuses):
            print(f"  {statuses[key]:4d}  {key}")
        assert not failures, "\n\n".join(failures)
        assert calls >= 12 * 20  # every operation was really exercised
        # the publisher was never disturbed by the fuzzing
        state = await api.ok("GET", f"/sessions/{publisher.session_id}")
        assert state["tracks"][0]["status"] == "active"
    finally:
        await asyncio.gather(publisher.close(), subscriber.close())


def _canonical(path: str) -> str:
    path = path.removeprefix("/v1")
    for ours, theirs in (("app_id", "appId"), ("session_id", "sessionId"), ("key_id", "keyId")):
        path = path.replace("{" + ours + "}", "{" + theirs + "}")
    return path


@pytest.mark.timeout(10)
def test_openapi_document_lists_exactly_the_served_routes():
    app = build_app(Registry(), {"a": "s"}, {"a": "s"}, [])
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or path == "/openapi.json":
            continue
        served.add((route.method.lower(), _canonical(path)))
    document = openapi_document()
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert served == documented
    assert document["servers"] == [
        {"url": "/v1", "description": "relative to this document's host"}
    ]
    # every operation documents each status its handler can answer, with a JSON error body
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            if "{sessionId}" in path:
                assert "410" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(responses), (method, path)
    schemathesis.openapi.from_dict(document).validate()


def sdp_mutations(sdp: str):
    """Every line deleted, duplicated, given bad values, and each of its tokens corrupted."""
    lines = sdp.split("\r\n")
    for index, line in enumerate(lines):
        before, after = lines[:index], lines[index + 1 :]
        yield f"delete {line!r}", before + after
        yield f"duplicate {line!r}", [*before, line, line, *after]
        if ":" in line:
            key = line.split(":", 1)[0]
            for value in ("", "x", "999999999999", "\x00", "9 9 9 9"):
                yield f"{key}:{value!r}", [*before, f"{key}:{value}", *after]
        tokens = line.split(" ")
        for position in range(len(tokens) if len(tokens) > 1 else 0):
            for value in ("", "-1", "abc"):
                changed = " ".join([*tokens[:position], value, *tokens[position + 1 :]])
                yield f"{line[:30]!r} token {position} -> {value!r}", [*before, changed, *after]


@pytest.mark.timeout(120)
async def test_mutated_offers_never_answer_5xx(http_session):
    """Exhaustive, deterministic line- and token-level mutations of a real aiortc offer."""
    sfu, client = http_session
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
    finally:
        await pc.close()
    url = f"{sfu.base_url}/apps/{sfu.app_id}/sessions/new"
    headers = {"Authorization": f"Bearer {sfu.app_secret}"}
    server_errors: list[str] = []
    statuses: dict[int, int] = {}
    sessions_before = len(sfu.registry)
    created = 0
    for name, lines in sdp_mutations(offer):
        body = {"sessionDescription": {"type": "offer", "sdp": "\r\n".join(lines)}}
        response = await client.post(url, json=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.headers["content-type"].startswith("application/json")
        if response.status_code == 201:
            created += 1
        elif response.status_code != 406:
            server_errors.append(f"{response.status_code} {name}")
    print(f"\nmutated offers: {statuses}")
    assert len(sfu.registry) == sessions_before + created  # refused offers leave no session
    assert not server_errors, "\n".join(server_errors)
