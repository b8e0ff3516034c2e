"""`WebApi`: the HTTP API and room page for browser participants, on the service's aiohttp app.

Routes (JSON in and out; every refusal is `{"error": {"code", "message"}}`):

    GET  /r/{room}                              the room page (token in the #fragment)
    GET  /static/{name}                         its scripts, styles, icon
    POST /api/rooms/{room}/join                 {token | credential, name} -> participant
    POST /api/participants/{id}/publish         {sessionDescription: offer, mid} -> answer
    POST /api/participants/{id}/pull            {tracks: [{sessionId, trackName}]} -> SFU offer
    POST /api/participants/{id}/answer          {sessionDescription: answer}
    POST /api/participants/{id}/close           {mids, sessionDescription: offer} -> answer
    POST /api/participants/{id}/refresh         -> a fresh credential
    POST /api/participants/{id}/leave
    GET  /api/participants/{id}/events          WebSocket (see events.py)

Participant routes take `Authorization: Bearer <credential>`; the credential is bound to
the participant id in the path. Checks run in this order: credential (401), participant
binding (403), participant exists (404), rate (429), then the request itself.

Browser-facing hardening: pages carry a strict Content-Security-Policy (scripts and styles
from this origin only, no inline code, Trusted Types required), `no-referrer`, no framing;
WebSocket upgrades must come from the configured public origin, and state-changing requests
that carry an Origin must come from it too. No CORS headers are sent: other sites' pages
cannot read any answer.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from media.ratelimit import KeyedBuckets, RateSpec
from media.realtime import RealtimeClient, TrackLocator, TurnClient
from media.rooms import RoomDirectory

from .errors import WebError, error_response
from .events import RoomEventsSocket
from .ice import IceGrant, IceServerSource
from .invites import InviteLinks
from .participants import Participant, ParticipantRegistry
from .sdp import SdpSummary
from .tokens import CREDENTIAL_TTL_S, TokenError, TokenSigner

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.store import InviteRecord

__all__ = ["RoomCheck", "WebApi", "known_rooms"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES: dict[str, str] = {
    "room.js": "text/javascript",
    "api.js": "text/javascript",
    "call.js": "text/javascript",
    "ui.js": "text/javascript",
    "room.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
MAX_BODY_BYTES = 96 * 1024
MAX_NAME_CHARS = 32
MAX_ID_CHARS = 256
DEFAULT_NAME = "Guest"
JOIN_RATE = RateSpec(capacity=30, refill_per_s=1)
"""Joins per invite (or per rejoining credential): a burst of 30, then one a second."""
ROOM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")

InviteLookup = Callable[[str], Awaitable["InviteRecord | None"]]
"""The stored invite with this id (the token's `jti`), for `/bridge invite` links."""
REJOIN_MEMORY_S = CREDENTIAL_TTL_S + 60
"""How long a participant id that was rejoined from is remembered (its credentials are dead
by then)."""

RoomCheck = Callable[[str], Awaitable[bool]]
"""Whether a room exists (is linked to a voice channel, or has members); operator invites
(`Invite.operator`) skip it."""

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_API_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _RoomsByName(Protocol):
    async def by_room(self, room: str) -> list[Any]: ...


def known_rooms(store: _RoomsByName, directory: RoomDirectory) -> RoomCheck:
    """A room exists when a voice channel is linked to it, or while it has members."""

    async def exists(room: str) -> bool:
        return bool(await store.by_room(room)) or bool(await directory.members(room))

    return exists


def _valid_room(room: str) -> bool:
    return 0 < len(room) <= 64 and set(room) <= ROOM_NAME_CHARS


class WebApi:
    def __init__(
        self,
        *,
        directory: RoomDirectory,
        realtime: RealtimeClient,
        signer: TokenSigner,
        ice: IceServerSource,
        public_url: str,
        room_exists: RoomCheck,
        invite_lookup: InviteLookup | None = None,
    ) -> None:
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        """Where browsers reach us; its origin is the only one allowed to open sockets."""
        self.registry = ParticipantRegistry(directory, realtime, ice)
        self.invites = InviteLinks(signer, self.public_url)
        self._room_exists = room_exists
        self._invite_lookup = invite_lookup
        self._rejoined: dict[str, float] = {}
        """Participant ids a credential rejoined from -> when to forget them (monotonic)."""
        self._events = RoomEventsSocket(self.registry, directory, signer)
        self._join_limits = KeyedBuckets(JOIN_RATE)
        self._stopped = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        directory: RoomDirectory,
        realtime: RealtimeClient,
        room_exists: RoomCheck,
        invite_lookup: InviteLookup | None = None,
    ) -> WebApi:
        secret = settings.http.invite_secret
        if settings.turn.key_id is not None and settings.turn.api_token is not None:
            turn = TurnClient(
                settings.realtime.base_url,
                settings.turn.key_id,
                settings.turn.api_token.get_secret_value(),
            )
            ice = IceServerSource(turn=turn)
        elif settings.backend == "cloudflare":
            ice = IceServerSource.stun_only()
        else:
            ice = IceServerSource.none()
        return cls(
            directory=directory,
            realtime=realtime,
            signer=TokenSigner(secret.get_secret_value() if secret else None),
            ice=ice,
            public_url=settings.http.public_url,
            room_exists=room_exists,
            invite_lookup=invite_lookup,
        )

    # -- wiring --------------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Add the page, its files and the API to `app` (before it starts)."""

        @web.middleware
        async def api_middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            return await self._api_middleware(request, handler)

        api = web.Application(middlewares=[api_middleware])
        api.router.add_post("/rooms/{room}/join", self._join)
        prefix = "/participants/{pid}"
        api.router.add_post(prefix + "/publish", self._publish)
        api.router.add_post(prefix + "/pull", self._pull)
        api.router.add_post(prefix + "/answer", self._answer)
        api.router.add_post(prefix + "/close", self._close)
        api.router.add_post(prefix + "/refresh", self._refresh)
        api.router.add_post(prefix + "/leave", self._leave)
        api.router.add_get(prefix + "/events", self._socket)
        app.add_subapp("/api", api)
        app.router.add_get("/r/{room}", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.on_shutdown.append(self._on_shutdown)

    async def start(self) -> None:
        self._stopped = False
        await self.registry.start()

    async def stop(self) -> None:
        """Remove every participant (closing its socket) and release TURN; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self.registry.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Open WebSockets would hold the server's shutdown; stop() is idempotent.
        await self.stop()

    # -- security --------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The public URL's origin, as browsers send it in `Origin`."""
        return _origin_of(self.public_url) or ""

    def _check_origin(self, request: web.Request, *, required: bool) -> None:
        origin = request.headers.get("Origin")
        if origin is None and not required:
            return
        if origin is None or _origin_of(origin) != self.origin:
            logger.info("refused origin=%r path=%s", origin, request.path)
            raise WebError(
                403, "bad_origin", "this request must come from the room page's own site"
            )

    def _page_headers(self) -> dict[str, str]:
        parts = urlsplit(self.public_url)
        socket_origin = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"
        csp = "; ".join(
            (
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "img-src 'self'",
                f"connect-src 'self' {socket_origin}",
                "media-src 'self'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
                "require-trusted-types-for 'script'",
                "trusted-types 'none'",
            )
        )
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Permissions-Policy": (
                "microphone=(self), camera=(), geolocation=(), display-capture=()"
            ),
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Cache-Control": "no-cache",
        }

    async def _api_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                self._check_origin(request, required=False)
            response = await handler(request)
        except WebError as exc:
            response = error_response(exc)
        except TokenError as exc:
            response = error_response(WebError(401, exc.code, exc.message))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            response = error_response(WebError(exc.status, code, exc.reason))
        except Exception:
            logger.exception("web api request failed path=%s", request.path)
            response = error_response(
                WebError(500, "internal_error", "something went wrong on our side")
            )
        if not response.prepared:
            response.headers.update(_API_HEADERS)
        return response

    def _authenticate(self, request: web.Request) -> Participant:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WebError(401, "credential_missing", "send Authorization: Bearer <credential>")
        credential = self.signer.verify_credential(token.strip())
        participant_id = request.match_info["pid"]
        if credential.participant_id != participant_id:
            raise WebError(403, "wrong_participant", "the credential is for another participant")
        participant = self.registry.get(participant_id)
        if participant.room != credential.room:
            raise WebError(403, "wrong_room", "the credential is for another room")
        wait_s = participant.http_bucket.take()
        if wait_s > 0:
            raise WebError(
                429, "rate_limited", "too many requests; slow down", retry_after_s=wait_s
            )
        return participant

    # -- pages -----------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if not _valid_room(request.match_info["room"]):
            raise web.HTTPNotFound(text="No such room page.", headers=self._page_headers())
        return web.FileResponse(
            STATIC_DIR / "index.html",
            headers=self._page_headers() | {"Content-Type": "text/html; charset=utf-8"},
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound(text="Not found.", headers=self._page_headers())
        charset = "" if content_type.startswith("image/") else "; charset=utf-8"
        return web.FileResponse(
            STATIC_DIR / name,
            headers=self._page_headers() | {"Content-Type": content_type + charset},
        )

    # -- API -------------------------------------------------------------------------------------

    async def _join(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        body = await _json_body(request)
        name = _display_name(body.get("name"))
        token, credential = body.get("token"), body.get("credential")
        replaces: str | None = None
        if isinstance(credential, str) and token is None:
            # Rejoin after a drop: a still-valid credential stands in for an expired invite,
            # once per participant (any of its credentials), so one cannot make two.
            held = self.signer.verify_credential(credential)
            granted_room, role, replaces = held.room, held.role, held.participant_id
            invite_id = held.invite_id or held.participant_id
            operator = held.operator
            if self._spent(replaces):
                raise WebError(401, "credential_spent", "this participant has rejoined already")
            if self.registry.kicked(replaces):
                raise WebError(403, "kicked", "a moderator removed you from this room")
        else:
            if not isinstance(token, str):
                raise WebError(401, "token_invalid", 'send the invite token as {"token": ...}')
            invite = self.signer.verify_invite(token)
            granted_room, role, invite_id = invite.room, invite.role, invite.jti
            operator = invite.operator
        if granted_room != room:
            raise WebError(403, "wrong_room", "this invite is for another room")
        if not _valid_room(room):
            raise WebError(404, "room_not_found", f"room {room} does not exist")
        cap = await self._invite_cap(invite_id, operator)
        # The operator may open rooms that exist only for the web; a stored invite's room
        # exists in the store; other invites need a linked channel (or a room in use).
        if cap is None and not (operator or await self._room_exists(room)):
            raise WebError(
                404, "room_not_found", f"room {room} does not exist (no channel is linked to it)"
            )
        wait_s = self._join_limits.take(invite_id)  # rejoins count against their invite
        if wait_s > 0:
            raise WebError(
                429,
                "rate_limited",
                "too many joins with this invite; wait a moment",
                retry_after_s=wait_s,
            )
        if cap is not None:
            holding = [
                p for p in self.registry.by_invite(invite_id) if p.participant_id != replaces
            ]
            if len(holding) >= cap:
                raise WebError(
                    409,
                    "invite_full",
                    f"{cap} people are in the room with this invite already; ask for your own",
                )
        if replaces is not None:
            self._rejoined[replaces] = time.monotonic() + REJOIN_MEMORY_S
        if replaces is not None:
            await self.registry.remove(replaces, "rejoined")
        participant, grant = await self.registry.join(
            room,
            role,
            name,
            CREDENTIAL_TTL_S,
            invite_id=invite_id,
            operator=operator,
            replaces=replaces,
        )
        issued, held_credential = self.signer.issue_credential(
            participant.participant_id, room, role, invite_id=invite_id, operator=operator
        )
        return web.json_response(
            {
                "participantId": participant.participant_id,
                "room": room,
                "role": role.value,
                "name": name,
                "credential": issued,
                "credentialExpiresAt": held_credential.expires_at,
                "credentialTtl": CREDENTIAL_TTL_S,
                "iceServers": grant.to_json(),
            }
        )

    def _spent(self, participant_id: str) -> bool:
        now = time.monotonic()
        for pid in [pid for pid, until in self._rejoined.items() if until <= now]:
            del self._rejoined[pid]
        return participant_id in self._rejoined

    async def _invite_cap(self, invite_id: str, operator: bool) -> int | None:
        """A stored invite's cap on participants, after checking it still holds; None for an
        invite that is not stored (operator invites, or no store)."""
        if operator or self._invite_lookup is None:
            return None
        record = await self._invite_lookup(invite_id)
        if record is None:
            raise WebError(401, "invite_unknown", "this invite is not known here (any more)")
        if record.revoked:
            raise WebError(401, "invite_revoked", "this invite has been revoked")
        if not record.usable_at(datetime.now(UTC)):
            raise WebError(401, "token_expired", "this invite has expired")
        return record.max_participants

    async def _publish(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        if not participant.role.can_publish:
            raise WebError(403, "listener_cannot_publish", "this invite is for listening only")
        body = await _json_body(request)
        offer = SdpSummary.parse(body.get("sessionDescription"), "offer")
        mid = body.get("mid")
        if not isinstance(mid, str) or not mid or len(mid) > MAX_ID_CHARS:
            raise WebError(400, "bad_request", "mid must name the microphone's m-line")
        answer = await self.registry.publish(participant, offer, mid)
        return web.json_response({"sessionDescription": answer.to_json(), "trackName": "mic"})

    async def _pull(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        body = await _json_body(request)
        tracks = body.get("tracks")
        if not isinstance(tracks, list):
            raise WebError(400, "bad_request", "tracks must be a list of {sessionId, trackName}")
        outcome = await self.registry.pull(participant, [_locator(item) for item in tracks])
        return web.json_response(outcome.to_json())

    async def _answer(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        body = await _json_body(request)
        await self.registry.answer(
            participant, SdpSummary.parse(body.get("sessionDescription"), "answer")
        )
        return web.json_response({})

    async def _close(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        body = await _json_body(request)
        mids = body.get("mids")
        if not isinstance(mids, list) or not all(isinstance(m, str) and m for m in mids):
            raise WebError(400, "bad_request", "mids must be a list of pulled mids")
        offer = SdpSummary.parse(body.get("sessionDescription"), "offer")
        answer = await self.registry.close(participant, mids, offer)
        return web.json_response({"sessionDescription": answer.to_json()})

    async def _refresh(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        issued, credential = self.signer.issue_credential(
            participant.participant_id,
            participant.room,
            participant.role,
            invite_id=participant.invite_id or None,
            operator=participant.operator,
        )
        self.registry.credential_refreshed(participant, CREDENTIAL_TTL_S)
        grant: IceGrant | None = await self.registry.regrant_ice(participant)
        body: dict[str, Any] = {
            "credential": issued,
            "credentialExpiresAt": credential.expires_at,
            "credentialTtl": CREDENTIAL_TTL_S,
        }
        if grant is not None:
            body["iceServers"] = grant.to_json()
        return web.json_response(body)

    async def _leave(self, request: web.Request) -> web.Response:
        participant = self._authenticate(request)
        await self.registry.remove(participant.participant_id, "left")
        return web.json_response({"left": True})

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        self._check_origin(request, required=True)
        participant = self.registry.get(request.match_info["pid"])
        return await self._events.serve(request, participant)


def _origin_of(url: str) -> str | None:
    """scheme://host[:port], lower-case, without the scheme's default port; None if unusable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    if request.content_type != "application/json":
        raise WebError(415, "unsupported_media_type", "send JSON (Content-Type: application/json)")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise WebError(413, "too_large", f"request bodies are at most {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise WebError(413, "too_large", f"request bodies are at most {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the decoder's stack (e.g. 90k `[`).
        raise WebError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise WebError(400, "bad_json", "the body must be a JSON object")
    return value


def _display_name(value: Any) -> str:
    if value is None:
        return DEFAULT_NAME
    if not isinstance(value, str):
        raise WebError(400, "bad_request", "name must be a string")
    # No control or format characters (bidi overrides, zero-width joiners used to spoof).
    visible = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C")
    return " ".join(visible.split())[:MAX_NAME_CHARS] or DEFAULT_NAME


def _locator(item: Any) -> TrackLocator:
    if not isinstance(item, Mapping):
        raise WebError(400, "bad_request", "each track must be {sessionId, trackName}")
    session_id, track_name = item.get("sessionId"), item.get("trackName")
    for value in (session_id, track_name):
        if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
            raise WebError(
                400, "bad_request", "each track must be {sessionId, trackName} (strings)"
            )
    return TrackLocator(str(session_id), str(track_name))  # both checked to be str above
