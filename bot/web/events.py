"""`RoomEventsSocket`: one participant's WebSocket — room events out, speaking and pings in.

Protocol (JSON text frames):

- page → service, first and within `AUTH_TIMEOUT_S`: `{"type": "auth", "credential": "..."}`
  (the credential travels in a message, not the URL, so it is in no access log);
- service → page: `{"type": "snapshot", "you": id, "members": [member...], "muted": [id...]}`
  (`muted`: web participants a moderator muted), then the room's changes in order:
  `member_joined {member}`, `member_left {memberId}`, `track_published {memberId, track}`,
  `track_removed {memberId, track}`, `speaking {memberId, trackName, speaking}`,
  `moderation {memberId, muted}`; `pong` to each `ping`; `error {error}`;
- page → service: `{"type": "speaking", "speaking": bool}`, `{"type": "ping"}`.

A member is `{"id", "kind", "name", "tracks": [{"sessionId", "trackName", "name"}],
"speaking": [trackName...]}`. Discord user ids are not sent.

Close codes: 4100 unmuted by a moderator (reconnect to publish again), 4401 bad or missing
credential, 4403 removed by a moderator (do not rejoin), 4404 participant removed, 4408 no
auth in time, 4409 replaced by a newer socket of the same participant, 4429 flooding, 1001
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from media.rooms import (
    Member,
    MemberJoined,
    MemberLeft,
    RoomDirectory,
    RoomEvent,
    SpeakingChanged,
    TrackInfo,
    TrackPublished,
    TrackRemoved,
)

from .errors import WebError
from .participants import Participant, ParticipantRegistry
from .tokens import TokenError, TokenSigner

__all__ = ["RoomEventsSocket", "event_json", "member_json"]

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 3.0
"""A page sends its auth message right after opening; an unauthenticated socket holds a
file descriptor, so it gets little time."""
CLOSE_TIMEOUT_S = 2.0
"""How long a close waits for the peer's close frame (aiohttp's default is 10 s)."""
MAX_PENDING_SOCKETS = 64
"""Sockets not yet authenticated, in all: more are refused (503) before the upgrade."""
MAX_PENDING_PER_PARTICIPANT = 2
"""Sockets not yet authenticated for one participant id: more are refused (429)."""
HEARTBEAT_S = 20.0
MAX_MESSAGE_BYTES = 4096
MAX_REFUSED_MESSAGES = 50
"""Messages refused for rate in a row before the socket is closed (4429)."""


def track_json(track: TrackInfo) -> dict[str, str]:
    return {
        "sessionId": track.session_id,
        "trackName": track.track_name,
        "name": track.display_name,
    }


def member_json(member: Member) -> dict[str, Any]:
    return {
        "id": member.member_id,
        "kind": member.kind.value,
        "name": member.display_name,
        "tracks": [track_json(track) for track in member.tracks],
        "speaking": sorted(member.speaking),
    }


def event_json(event: RoomEvent) -> dict[str, Any]:
    match event:
        case MemberJoined(member=member):
            return {"type": "member_joined", "member": member_json(member)}
        case MemberLeft(member_id=member_id):
            return {"type": "member_left", "memberId": member_id}
        case TrackPublished(member_id=member_id, track=track):
            return {"type": "track_published", "memberId": member_id, "track": track_json(track)}
        case TrackRemoved(member_id=member_id, track=track):
            return {"type": "track_removed", "memberId": member_id, "track": track_json(track)}
        case SpeakingChanged(member_id=member_id, track_name=track_name, speaking=speaking):
            return {
                "type": "speaking",
                "memberId": member_id,
                "trackName": track_name,
                "speaking": speaking,
            }
    raise TypeError(f"not a room event: {event!r}")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


class RoomEventsSocket:
    """Serves one upgraded request for one (already looked-up) participant."""

    def __init__(
        self, registry: ParticipantRegistry, directory: RoomDirectory, signer: TokenSigner
    ) -> None:
        self._registry = registry
        self._directory = directory
        self._signer = signer
        self._pending: dict[str, int] = {}
        """Participant id -> its sockets upgraded but not yet authenticated."""

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    async def serve(self, request: web.Request, participant: Participant) -> web.WebSocketResponse:
        pid = participant.participant_id
        if self.pending >= MAX_PENDING_SOCKETS:
            raise WebError(
                503,
                "busy",
                "too many connections are opening; try again shortly",
                close_connection=True,
            )
        if self._pending.get(pid, 0) >= MAX_PENDING_PER_PARTICIPANT:
            raise WebError(
                429,
                "rate_limited",
                "this participant is already connecting",
                close_connection=True,
            )
        self._pending[pid] = self._pending.get(pid, 0) + 1
        try:
            ws = web.WebSocketResponse(
                heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT_S
            )
            await ws.prepare(request)
            authenticated = await self._authenticate(ws, participant)
        finally:
            self._pending[pid] -= 1
            if not self._pending[pid]:
                del self._pending[pid]
        if not authenticated:
            return ws
        previous = self._registry.socket_opened(participant, ws)
        if previous is not None:
            await previous.close(code=4409, message=b"replaced by a newer connection")
        try:
            await self._serve_events(ws, participant)
        except ConnectionError as exc:
            logger.info(
                "events socket broke participant=%s error=%s",
                participant.participant_id,
                type(exc).__name__,
            )
        finally:
            await self._registry.socket_closed(participant, ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve_events(self, ws: web.WebSocketResponse, participant: Participant) -> None:
        async with self._directory.events(participant.room) as stream:
            members = await self._directory.members(participant.room)
            await ws.send_json(
                {
                    "type": "snapshot",
                    "you": participant.participant_id,
                    "members": [member_json(m) for m in members],
                    "muted": self._registry.muted_in(participant.room),
                }
            )
            forward = asyncio.create_task(
                self._forward(stream, ws), name=f"web-events-{participant.participant_id}"
            )
            try:
                await self._receive(ws, participant)
            finally:
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)

    async def _authenticate(self, ws: web.WebSocketResponse, participant: Participant) -> bool:
        """Whether the first message authenticates the socket; otherwise it is closed. A
        socket that closes (or breaks) first just ends: a page going away is no error."""
        try:
            return await self._check_auth(ws, participant)
        except ConnectionError as exc:  # aiohttp's ClientConnectionResetError is one
            logger.info(
                "events socket gone before auth participant=%s error=%s",
                participant.participant_id,
                type(exc).__name__,
            )
            return False

    async def _check_auth(self, ws: web.WebSocketResponse, participant: Participant) -> bool:
        try:
            message = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
        except TimeoutError:
            await ws.close(code=4408, message=b"no auth message in time")
            return False
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return False
        body = _parse(message.data) if message.type is WSMsgType.TEXT else None
        credential = body.get("credential") if body and body.get("type") == "auth" else None
        try:
            if not isinstance(credential, str):
                raise TokenError("token_invalid", "first message must be {type: auth, credential}")
            verified = self._signer.verify_credential(credential)
        except TokenError as exc:
            await ws.send_json(_error(exc.code, exc.message))
            await ws.close(code=4401, message=exc.code.encode())
            return False
        if (
            verified.participant_id != participant.participant_id
            or verified.room != participant.room
        ):
            await ws.send_json(
                _error("wrong_participant", "the credential is for another participant")
            )
            await ws.close(code=4401, message=b"wrong_participant")
            return False
        return True

    async def _forward(self, stream: AsyncIterator[RoomEvent], ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionResetError):
            async for event in stream:
                await ws.send_json(event_json(event))
            # The directory dropped this subscriber (too slow): the page must resync.
            await ws.close(code=4404, message=b"event stream lost")

    async def _receive(self, ws: web.WebSocketResponse, participant: Participant) -> None:
        refused = 0
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                await ws.close(code=1003, message=b"text frames only")
                return
            if participant.socket_bucket.take() > 0:
                refused += 1
                if refused >= MAX_REFUSED_MESSAGES:
                    await ws.close(code=4429, message=b"too many messages")
                    return
                await ws.send_json(_error("rate_limited", "too many messages; slow down"))
                continue
            refused = 0
            body = _parse(message.data) or {}
            kind, speaking = body.get("type"), body.get("speaking")
            if kind == "ping":
                await ws.send_json({"type": "pong"})
            elif kind == "speaking" and isinstance(speaking, bool):
                await self._registry.set_speaking(participant, speaking)
            else:
                await ws.send_json(
                    _error(
                        "bad_message", "expected {type: ping} or {type: speaking, speaking: bool}"
                    )
                )


def _parse(data: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (TypeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
