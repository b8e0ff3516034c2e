"""HTTP handlers of the Realtime API, served under both `/v1/apps/...` and `/apps/...`."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from . import models
from .errors import ApiError
from .openapi import openapi_document
from .registry import Registry
from .session import SfuSession

__all__ = ["MAX_BODY_BYTES", "build_app"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
REGISTRY = web.AppKey("registry", Registry)
APPS = web.AppKey[Mapping[str, str]]("apps")
TURN_KEYS = web.AppKey[Mapping[str, str]]("turn_keys")
STUN_URLS = web.AppKey[list[str]]("stun_urls")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response is JSON, whatever went wrong (partytracks calls .json() on all)."""
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            logger.error("request failed path=%s %s", request.path, exc)
        return _json(exc.to_json(), exc.status)
    except web.HTTPRequestEntityTooLarge:
        return _json(
            {
                "errorCode": "invalid_params",
                "errorDescription": f"request body exceeds {MAX_BODY_BYTES} bytes",
            },
            413,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json(
            {
                "errorCode": "not_found" if exc.status == 404 else "invalid_params",
                "errorDescription": exc.reason,
            },
            exc.status,
        )
    except Exception:
        logger.exception("unhandled error path=%s", request.path)
        return _json({"errorCode": "internal_error", "errorDescription": "internal error"}, 500)


CORS_ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = 86400


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Permissive CORS, as Cloudflare's API answers: browser pages call the SFU directly.

    Preflights (OPTIONS with Access-Control-Request-Method) are answered here without auth;
    every other response, errors included, carries the reflected Origin (`vary: Origin`).
    """
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "Access-Control-Request-Headers", CORS_ALLOW_HEADERS
        )
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    else:
        response = await handler(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response


def _authorize(request: web.Request, secrets_by_id: Mapping[str, str], key_id: str) -> None:
    secret = secrets_by_id.get(key_id)
    header = request.headers.get("Authorization", "")
    token = header[7:] if header[:7].lower() == "bearer " else ""
    if secret is None:
        raise ApiError.unauthorized(f"unknown app or key id {key_id!r}")
    # Header bytes that are no UTF-8 arrive as surrogates; they must fail as 401, not 500.
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), secret.encode()):
        raise ApiError.unauthorized()


async def _body(request: web.Request) -> dict[str, Any]:
    return models.parse_body(await request.read())


def _session(request: web.Request) -> SfuSession:
    _authorize(request, request.app[APPS], request.match_info["app_id"])
    return request.app[REGISTRY].get(request.match_info["session_id"])


async def new_session(request: web.Request) -> web.Response:
    _authorize(request, request.app[APPS], request.match_info["app_id"])
    body = await _body(request)
    description = models.session_description(body)
    registry = request.app[REGISTRY]
    session = registry.create()
    out: dict[str, Any] = {"sessionId": session.id}
    if description is not None:
        try:
            async with session.lock:
                answer = await session.accept_offer(description)
        except BaseException:  # any failure, not only ApiError: never leave a session behind
            await registry.discard(session)
            raise
        out["sessionDescription"] = answer.to_json()
    return _json(out, 201)


async def new_tracks(request: web.Request) -> web.Response:
    session = _session(request)
    req = models.tracks_request(await _body(request))
    if not req.tracks and not req.auto_discover:
        raise ApiError.invalid_params("tracks must list at least one track (or set autoDiscover)")
    async with session.lock:
        results, description, renegotiate = await session.new_tracks(
            req.tracks, req.session_description, req.auto_discover
        )
    out: dict[str, Any] = {
        "requiresImmediateRenegotiation": renegotiate,
        "tracks": [r.to_json() for r in results],
    }
    if description is not None:
        out["sessionDescription"] = description.to_json()
    return _json(out)


async def renegotiate(request: web.Request) -> web.Response:
    session = _session(request)
    description = models.session_description(await _body(request))
    if description is None:
        raise ApiError.invalid_params("sessionDescription (the answer) is required")
    async with session.lock:
        await session.renegotiate(description)
    return _json({})


async def update_tracks(request: web.Request) -> web.Response:
    _session(request)
    req = models.tracks_request(await _body(request))
    # Simulcast and layer preferences are video concepts; audio tracks accept them as no-ops.
    tracks = [
        {
            k: v
            for k, v in (("mid", t.mid), ("trackName", t.track_name), ("sessionId", t.session_id))
            if v
        }
        for t in req.tracks
    ]
    return _json({"requiresImmediateRenegotiation": False, "tracks": tracks})


async def close_tracks(request: web.Request) -> web.Response:
    session = _session(request)
    req = models.close_tracks_request(await _body(request))
    async with session.lock:
        results, answer = await session.close_tracks(req.mids, req.session_description, req.force)
    out: dict[str, Any] = {
        "requiresImmediateRenegotiation": False,
        "tracks": [r.to_json() for r in results],
    }
    if answer is not None:
        out["sessionDescription"] = answer.to_json()
    return _json(out)


async def get_session(request: web.Request) -> web.Response:
    session = _session(request)
    return _json(
        {
            "tracks": [t.to_json() for t in session.track_statuses()],
            "dataChannels": [c.to_json() for c in session.datachannel_statuses()],
        }
    )


async def establish_datachannels(request: web.Request) -> web.Response:
    session = _session(request)
    req = models.establish_request(await _body(request))
    async with session.lock:
        channel, description, renegotiate = await session.establish_datachannels(
            req.session_description
        )
    out: dict[str, Any] = {
        "dataChannel": channel.to_json(),
        "requiresImmediateRenegotiation": renegotiate,
    }
    if description is not None:
        out["sessionDescription"] = description.to_json()
    return _json(out)


async def new_datachannels(request: web.Request) -> web.Response:
    session = _session(request)
    req = models.datachannels_request(await _body(request))
    async with session.lock:
        results = await session.new_datachannels(req.channels)
    return _json({"dataChannels": [r.to_json() for r in results]})


async def close_datachannels(request: web.Request) -> web.Response:
    session = _session(request)
    ids = models.close_datachannels_request(await _body(request))
    async with session.lock:
        results = session.close_datachannels(ids)
    return _json({"dataChannels": [r.to_json() for r in results]})


def _ice_servers(request: web.Request) -> list[dict[str, Any]]:
    _authorize(request, request.app[TURN_KEYS], request.match_info["key_id"])
    urls = request.app[STUN_URLS]
    return [{"urls": list(urls)}] if urls else []


async def generate_ice_servers(request: web.Request) -> web.Response:
    await _turn_body(request)
    return _json({"iceServers": _ice_servers(request)}, 201)


async def generate_legacy(request: web.Request) -> web.Response:
    await _turn_body(request)
    servers = _ice_servers(request)
    # The legacy endpoint returns one object, not a list.
    return _json({"iceServers": servers[0] if servers else {"urls": []}}, 201)


async def _turn_body(request: web.Request) -> None:
    _authorize(request, request.app[TURN_KEYS], request.match_info["key_id"])  # before the body
    models.turn_credentials_request(await _body(request))


async def revoke(request: web.Request) -> web.Response:
    _authorize(request, request.app[TURN_KEYS], request.match_info["key_id"])
    return web.Response(status=204)


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def not_found(request: web.Request) -> web.Response:
    # The catch-all route wins over aiohttp's own 405; find the methods the path does allow.
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        return web.json_response(
            {
                "errorCode": "method_not_allowed",
                "errorDescription": f"{request.method} is not allowed on {request.path}",
            },
            status=405,
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    raise ApiError(404, "not_found", f"no such endpoint: {request.method} {request.path}")


def build_app(
    registry: Registry,
    apps: Mapping[str, str],
    turn_keys: Mapping[str, str],
    stun_urls: list[str],
) -> web.Application:
    app = web.Application(middlewares=[cors, errors_as_json], client_max_size=MAX_BODY_BYTES)
    app[REGISTRY] = registry
    app[APPS] = dict(apps)
    app[TURN_KEYS] = dict(turn_keys)
    app[STUN_URLS] = stun_urls
    s = "/apps/{app_id}/sessions/{session_id}"
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/apps/{app_id}/sessions/new", new_session)
        app.router.add_post(prefix + s + "/tracks/new", new_tracks)
        app.router.add_put(prefix + s + "/renegotiate", renegotiate)
        app.router.add_put(prefix + s + "/tracks/update", update_tracks)
        app.router.add_put(prefix + s + "/tracks/close", close_tracks)
        app.router.add_get(prefix + s, get_session)
        app.router.add_post(prefix + s + "/datachannels/establish", establish_datachannels)
        app.router.add_post(prefix + s + "/datachannels/new", new_datachannels)
        app.router.add_put(prefix + s + "/datachannels/close", close_datachannels)
        turn = prefix + "/turn/keys/{key_id}/credentials"
        app.router.add_post(turn + "/generate-ice-servers", generate_ice_servers)
        app.router.add_post(turn + "/generate", generate_legacy)
        app.router.add_post(turn + "/{username}/revoke", revoke)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
