"""`ParticipantRegistry`: browser participants of rooms, and the Realtime calls made for them.

A participant is one page in one room: a Realtime session the service created with its own
secret, a member of kind WEB in the room directory, at most one published track (its
microphone, `MIC_TRACK`), the tracks it pulls (by mid), and one events WebSocket. The page
never talks to Realtime; every change goes through here and is checked first: listeners
cannot publish, a participant pulls only tracks published in its own room (never its own),
and one negotiation runs at a time per participant (a pull's SFU offer must be answered
before anything else changes).

A participant ends when it leaves, when its WebSocket closes (the page rebuilds a fresh
participant after any drop), when it opens no WebSocket within `SOCKET_GRACE_S` of joining,
or when its credential runs out unrefreshed. One named task (`start`/`stop`) waits on the
earliest of those deadlines or a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from aiohttp import web

from media.ratelimit import RateSpec, TokenBucket
from media.realtime import (
    InvalidParams,
    RealtimeClient,
    RealtimeError,
    SessionDescription,
    SessionGone,
    TrackLocator,
    TrackRequest,
    TrackResult,
)
from media.rooms import MemberKind, RoomDirectory, TrackInfo

from .errors import WebError
from .ice import TURN_TTL_S, IceGrant, IceServerSource
from .sdp import SdpSummary
from .tokens import Role

__all__ = [
    "MAX_PARTICIPANTS_PER_ROOM",
    "MIC_TRACK",
    "Negotiation",
    "Participant",
    "ParticipantRegistry",
    "ParticipantState",
    "PullOutcome",
    "PulledTrack",
]

logger = logging.getLogger(__name__)

MIC_TRACK = "mic"
"""The one track name a page publishes under (per session, so unique with the session id)."""
SOCKET_GRACE_S = 20.0
"""A joined participant that opens no events WebSocket within this is removed."""
CREDENTIAL_GRACE_S = 30.0
"""A participant whose credential expired this long ago without a refresh is removed."""
MAX_PARTICIPANTS_PER_ROOM = 50
"""Browser participants per room held by this process."""
MAX_PULLS_PER_REQUEST = 32
HTTP_RATE = RateSpec(capacity=20, refill_per_s=5)
"""API requests per participant: a burst of 20, 5 a second sustained."""
SOCKET_RATE = RateSpec(capacity=20, refill_per_s=5)
"""WebSocket messages per participant (speaking changes, pings)."""
CLEANUP_TIMEOUT_S = 5.0

Clock = Callable[[], float]


class ParticipantState(Enum):
    JOINED = "joined"
    """Joined; its events WebSocket is not open yet."""
    CONNECTED = "connected"
    LEFT = "left"


class Negotiation(Enum):
    STABLE = "stable"
    AWAITING_ANSWER = "awaiting_answer"
    """A pull returned an SFU offer; only its answer may come next."""


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    mid: str
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class PulledTrack:
    """One item of a pull, as the page gets it back."""

    locator: TrackLocator
    mid: str | None
    error_code: str | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "sessionId": self.locator.session_id,
            "trackName": self.locator.track_name,
            "mid": self.mid,
        }
        if self.error_code is not None:
            data["error"] = {"code": self.error_code, "message": self.error_message or ""}
        return data


@dataclass(frozen=True, slots=True)
class PullOutcome:
    tracks: tuple[PulledTrack, ...]
    offer: SessionDescription | None

    def to_json(self) -> dict[str, object]:
        return {
            "tracks": [track.to_json() for track in self.tracks],
            "sessionDescription": self.offer.to_json() if self.offer else None,
            "requiresImmediateRenegotiation": self.offer is not None,
        }


@dataclass(eq=False, slots=True)
class Participant:
    participant_id: str
    room: str
    role: Role
    display_name: str
    session_id: str
    joined_at: float
    """Monotonic seconds."""
    credential_deadline: float
    """Monotonic seconds after which it is removed unless the credential is refreshed."""
    invite_id: str = ""
    """The jti of the invite it joined with (first join, or the one before a rejoin)."""
    operator: bool = False
    """Joined with an operator's invite: its room need not be linked to a voice channel."""
    state: ParticipantState = ParticipantState.JOINED
    muted: bool = False
    """Muted by a moderator: its microphone is not forwarded and it may not publish."""
    negotiation: Negotiation = Negotiation.STABLE
    published: PublishedTrack | None = None
    pulled: dict[str, TrackLocator] = field(default_factory=dict)
    """mid on this participant's session -> the publication it receives."""
    socket: web.WebSocketResponse | None = None
    turn_usernames: list[str] = field(default_factory=list)
    turn_granted_at: float = 0.0
    http_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(HTTP_RATE))
    socket_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(SOCKET_RATE))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held for each change (one negotiation step at a time)."""

    def _set_state(self, state: ParticipantState) -> None:
        if state is self.state:
            return
        logger.info(
            "participant state participant=%s room=%s %s->%s",
            self.participant_id,
            self.room,
            self.state.value,
            state.value,
        )
        self.state = state

    def deadline(self) -> float:
        if self.state is ParticipantState.LEFT:
            return 0.0
        if self.state is ParticipantState.JOINED:
            return min(self.joined_at + SOCKET_GRACE_S, self.credential_deadline)
        return self.credential_deadline


class ParticipantRegistry:
    def __init__(
        self,
        directory: RoomDirectory,
        realtime: RealtimeClient,
        ice: IceServerSource,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._directory = directory
        self._realtime = realtime
        self._ice = ice
        self._clock = clock
        self._participants: dict[str, Participant] = {}
        self._changed = asyncio.Event()
        self._expiry: asyncio.Task[None] | None = None
        self._muted_ids: set[str] = set()
        """Participants a moderator muted: a rejoin from one of them stays muted."""
        self._kicked_ids: set[str] = set()
        """Participants a moderator removed: their credentials may not rejoin."""
        self._banned_names: dict[str, set[str]] = {}
        """Room -> display names (casefolded) a moderator banned, for this process's life."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.create_task(self._expire(), name="web-participant-expiry")

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None
        await asyncio.gather(
            *(self.remove(pid, "shutdown", close_code=1001) for pid in list(self._participants)),
            return_exceptions=True,
        )
        await self._ice.aclose()

    async def _expire(self) -> None:
        """Removes participants past their deadline; sleeps until the next one or a change."""
        while True:
            self._changed.clear()
            now = self._clock()
            due = [p for p in self._participants.values() if p.deadline() <= now]
            # Together: one slow cleanup must not hold the others in the room.
            await asyncio.gather(
                *(
                    self.remove(
                        p.participant_id,
                        "no events socket"
                        if p.state is ParticipantState.JOINED
                        else "credential expired",
                    )
                    for p in due
                ),
                return_exceptions=True,
            )
            deadlines = [p.deadline() for p in self._participants.values()]
            timeout = max(0.0, min(deadlines) - self._clock()) if deadlines else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    # -- membership ---------------------------------------------------------------------------

    def get(self, participant_id: str) -> Participant:
        participant = self._participants.get(participant_id)
        if participant is None:
            raise WebError(404, "participant_not_found", "no such participant (it has left)")
        return participant

    def find(self, participant_id: str) -> Participant | None:
        return self._participants.get(participant_id)

    def in_room(self, room: str) -> list[Participant]:
        return [p for p in self._participants.values() if p.room == room]

    def by_invite(self, invite_id: str) -> list[Participant]:
        """The participants that joined (or rejoined) through invite `invite_id`."""
        return [p for p in self._participants.values() if p.invite_id == invite_id]

    async def remove_invite(self, invite_id: str, reason: str) -> int:
        """Remove everyone in through `invite_id` (it was revoked); how many were removed."""
        leaving = self.by_invite(invite_id)
        await asyncio.gather(
            *(self.remove(p.participant_id, reason) for p in leaving), return_exceptions=True
        )
        return len(leaving)

    async def join(
        self,
        room: str,
        role: Role,
        display_name: str,
        credential_ttl_s: float,
        *,
        invite_id: str = "",
        operator: bool = False,
        replaces: str | None = None,
    ) -> tuple[Participant, IceGrant]:
        if self.banned(room, display_name):
            raise WebError(403, "banned", "a moderator has banned this name from the room")
        if len(self.in_room(room)) >= MAX_PARTICIPANTS_PER_ROOM:
            raise WebError(
                409,
                "room_full",
                f"room {room} has {MAX_PARTICIPANTS_PER_ROOM} web participants already",
            )
        try:
            session = await self._realtime.new_session()
        except RealtimeError as exc:
            raise _realtime_refusal(exc) from None
        grant = await self._ice.grant()
        now = self._clock()
        participant = Participant(
            participant_id=f"web-{secrets.token_hex(8)}",
            room=room,
            role=role,
            display_name=display_name,
            session_id=session.session_id,
            joined_at=now,
            credential_deadline=now + credential_ttl_s + CREDENTIAL_GRACE_S,
            turn_granted_at=now,
            invite_id=invite_id,
            operator=operator,
            muted=replaces is not None and replaces in self._muted_ids,
        )
        if participant.muted:
            self._muted_ids.add(participant.participant_id)
        if grant.turn_username:
            participant.turn_usernames.append(grant.turn_username)
        self._participants[participant.participant_id] = participant
        self._changed.set()
        await self._directory.join(room, participant.participant_id, MemberKind.WEB, display_name)
        logger.info(
            "participant joined participant=%s room=%s role=%s session_id=%s",
            participant.participant_id,
            room,
            role.value,
            session.session_id,
        )
        return participant, grant

    def credential_refreshed(self, participant: Participant, credential_ttl_s: float) -> None:
        participant.credential_deadline = self._clock() + credential_ttl_s + CREDENTIAL_GRACE_S
        self._changed.set()

    async def regrant_ice(self, participant: Participant) -> IceGrant | None:
        """Fresh TURN credentials once the current ones are past half their life."""
        if not self._ice.uses_turn or self._clock() - participant.turn_granted_at < TURN_TTL_S / 2:
            return None
        grant = await self._ice.grant()
        participant.turn_granted_at = self._clock()
        if grant.turn_username:
            participant.turn_usernames.append(grant.turn_username)
        return grant

    def socket_opened(
        self, participant: Participant, socket: web.WebSocketResponse
    ) -> web.WebSocketResponse | None:
        """Adopt `socket` as the participant's events socket; returns the one it replaces."""
        previous, participant.socket = participant.socket, socket
        participant._set_state(ParticipantState.CONNECTED)
        self._changed.set()
        return previous if previous is not socket else None

    async def socket_closed(self, participant: Participant, socket: web.WebSocketResponse) -> None:
        if participant.socket is socket:
            participant.socket = None
            await self.remove(participant.participant_id, "events socket closed")

    async def remove(self, participant_id: str, reason: str, *, close_code: int = 4404) -> None:
        """Take the participant out of its room, stop its Realtime tracks, close its socket
        (`close_code`: 4404 removed, 1001 shutdown) and revoke its TURN credentials."""
        participant = self._participants.pop(participant_id, None)
        if participant is None:
            return
        participant._set_state(ParticipantState.LEFT)
        self._changed.set()
        logger.info(
            "participant removed participant=%s room=%s reason=%s",
            participant_id,
            participant.room,
            reason,
        )
        await self._directory.leave(participant.room, participant_id)
        mids = list(participant.pulled)
        if participant.published is not None:
            mids.insert(0, participant.published.mid)
        socket, participant.socket = participant.socket, None
        steps: list[Awaitable[object]] = [
            self._force_close(participant, mids),
            self._ice.revoke(participant.turn_usernames),
        ]
        if socket is not None and not socket.closed:
            steps.append(socket.close(code=close_code, message=reason.encode()[:120]))
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                await asyncio.gather(*steps, return_exceptions=True)
        except TimeoutError:
            logger.warning("participant cleanup timed out participant=%s", participant_id)

    # -- moderation ------------------------------------------------------------------------------

    def kicked(self, participant_id: str) -> bool:
        return participant_id in self._kicked_ids

    def banned(self, room: str, display_name: str) -> bool:
        return display_name.casefold() in self._banned_names.get(room, set())

    async def ban_name(self, room: str, display_name: str, by: str) -> int:
        """Refuse `display_name` in `room` from now on and remove who uses it; how many went."""
        self._banned_names.setdefault(room, set()).add(display_name.casefold())
        leaving = [p for p in self.in_room(room) if self.banned(room, p.display_name)]
        self._kicked_ids.update(p.participant_id for p in leaving)
        await asyncio.gather(
            *(self.remove(p.participant_id, f"banned by {by}", close_code=4403) for p in leaving),
            return_exceptions=True,
        )
        return len(leaving)

    async def kick(self, participant_id: str, by: str) -> bool:
        """Remove a participant for good: its page is told (4403) and does not rejoin."""
        if participant_id not in self._participants:
            return False
        self._kicked_ids.add(participant_id)
        await self.remove(participant_id, f"kicked by {by}", close_code=4403)
        return True

    def muted_in(self, room: str) -> list[str]:
        return sorted(p.participant_id for p in self.in_room(room) if p.muted)

    async def set_muted(self, participant: Participant, muted: bool, by: str) -> None:
        """Mute (its microphone stops being forwarded, now and after rejoins) or unmute; every
        page in the room is told."""
        async with participant.lock:
            if participant.muted == muted:
                return
            participant.muted = muted
            published = participant.published  # None when unmuting: a muted one cannot publish
            participant.published = None
            if muted:
                self._muted_ids.add(participant.participant_id)
            else:
                self._muted_ids.discard(participant.participant_id)
            logger.info(
                "participant %s participant=%s room=%s by=%s",
                "muted" if muted else "unmuted",
                participant.participant_id,
                participant.room,
                by,
            )
            if published is not None:
                await self._directory.unpublish(
                    participant.room, participant.participant_id, published.track
                )
                await self._force_close(participant, [published.mid])
        await self.notify_room(
            participant.room,
            {"type": "moderation", "memberId": participant.participant_id, "muted": muted},
        )
        if not muted and participant.socket is not None:
            # The page publishes its microphone when it (re)connects.
            await participant.socket.close(code=4100, message=b"unmuted: reconnect")

    async def notify_room(self, room: str, message: dict[str, object]) -> None:
        sockets = [p.socket for p in self.in_room(room) if p.socket and not p.socket.closed]
        for socket in sockets:
            with contextlib.suppress(ConnectionError):
                await socket.send_json(message)

    async def _force_close(self, participant: Participant, mids: Sequence[str]) -> None:
        """Stop Realtime forwarding for `mids` without SDP (the page is gone or going)."""
        if not mids:
            return
        try:
            await self._realtime.close_tracks(participant.session_id, mids, force=True)
        except (RealtimeError, ValueError) as exc:
            logger.info(
                "closing tracks of a leaver failed participant=%s error=%s",
                participant.participant_id,
                exc,
            )

    # -- media ---------------------------------------------------------------------------------

    async def publish(
        self, participant: Participant, offer: SdpSummary, mid: str
    ) -> SessionDescription:
        """Push the page's microphone (the m-line `mid` of `offer`); returns the SFU's answer."""
        if not participant.role.can_publish:
            raise WebError(403, "listener_cannot_publish", "this invite is for listening only")
        if participant.muted:
            raise WebError(403, "muted_by_moderator", "a moderator has muted you in this room")
        if not offer.sending_audio(mid):
            raise WebError(
                400, "bad_sdp", f"mid {mid!r} is not a sending audio m-line of the offer"
            )
        async with participant.lock:
            self._check_can_change(participant)
            if participant.published is not None:
                raise WebError(
                    409,
                    "already_publishing",
                    "the microphone is already published; mute it instead",
                )
            try:
                result = await self._realtime.new_tracks(
                    participant.session_id, [TrackRequest.push(MIC_TRACK, mid)], offer.description
                )
            except RealtimeError as exc:
                raise _realtime_refusal(exc) from None
            answer = result.session_description
            failed = result.failed
            if failed or answer is None or answer.type != "answer":
                code = failed[0].error.error_code if failed and failed[0].error else "no answer"
                raise WebError(
                    502, "publish_failed", f"Realtime did not accept the microphone ({code})"
                )
            track = TrackInfo(participant.session_id, MIC_TRACK, participant.display_name)
            participant.published = PublishedTrack(mid, track)
            if participant.state is ParticipantState.LEFT:
                await self._force_close(participant, [mid])
                raise WebError(404, "participant_not_found", "the participant left meanwhile")
            await self._directory.publish(participant.room, participant.participant_id, track)
            logger.info(
                "participant publishes participant=%s room=%s mid=%s",
                participant.participant_id,
                participant.room,
                mid,
            )
            return answer

    async def pull(self, participant: Participant, wanted: Sequence[TrackLocator]) -> PullOutcome:
        """Subscribe to publications of the participant's own room (the SFU offers)."""
        if not wanted:
            raise WebError(
                400, "bad_request", "tracks must list at least one {sessionId, trackName}"
            )
        if len(wanted) > MAX_PULLS_PER_REQUEST:
            raise WebError(400, "bad_request", f"at most {MAX_PULLS_PER_REQUEST} tracks per pull")
        async with participant.lock:
            self._check_can_change(participant)
            in_room = await self._room_publications(participant)
            own = participant.published.track if participant.published else None
            for locator in wanted:
                if own is not None and (locator.session_id, locator.track_name) == (
                    own.session_id,
                    own.track_name,
                ):
                    raise WebError(
                        400, "own_track", "a participant does not pull its own microphone"
                    )
                if locator not in in_room:
                    raise WebError(
                        403,
                        "track_not_in_room",
                        f"track {locator.track_name!r} is not published in room {participant.room}",
                    )
            already = {locator: mid for mid, locator in participant.pulled.items()}
            fresh = list(dict.fromkeys(locator for locator in wanted if locator not in already))
            results: dict[TrackLocator, PulledTrack] = {
                locator: PulledTrack(locator, already[locator])
                for locator in wanted
                if locator in already
            }
            offer = None
            if fresh:
                try:
                    reply = await self._realtime.new_tracks(
                        participant.session_id, [TrackRequest.pull(locator) for locator in fresh]
                    )
                except RealtimeError as exc:
                    raise _realtime_refusal(exc) from None
                for locator, item in zip(fresh, _padded(reply.tracks, len(fresh)), strict=True):
                    pulled = results[locator] = _pulled(locator, item)
                    if pulled.mid is not None:
                        participant.pulled[pulled.mid] = locator
                if (
                    reply.session_description is not None
                    and reply.session_description.type == "offer"
                ):
                    offer = reply.session_description
                    participant.negotiation = Negotiation.AWAITING_ANSWER
                if participant.state is ParticipantState.LEFT:
                    await self._force_close(participant, [r.mid for r in results.values() if r.mid])
                    raise WebError(404, "participant_not_found", "the participant left meanwhile")
            return PullOutcome(tuple(results[locator] for locator in dict.fromkeys(wanted)), offer)

    async def answer(self, participant: Participant, answer: SdpSummary) -> None:
        """The page's answer to the SFU offer a pull returned."""
        async with participant.lock:
            if participant.negotiation is not Negotiation.AWAITING_ANSWER:
                raise WebError(409, "no_pending_offer", "there is no SFU offer to answer")
            participant.negotiation = Negotiation.STABLE
            try:
                await self._realtime.renegotiate(participant.session_id, answer.description)
            except RealtimeError as exc:
                raise _realtime_refusal(exc) from None

    async def close(
        self, participant: Participant, mids: Sequence[str], offer: SdpSummary
    ) -> SessionDescription:
        """Stop receiving pulled tracks (negotiated: the page's offer has them stopped)."""
        if not mids:
            raise WebError(400, "bad_request", "mids must list at least one pulled mid")
        async with participant.lock:
            self._check_can_change(participant)
            for mid in mids:
                if participant.published is not None and mid == participant.published.mid:
                    raise WebError(
                        400, "cannot_close_microphone", "mute the microphone instead of closing it"
                    )
                if mid not in participant.pulled:
                    raise WebError(400, "unknown_mid", f"mid {mid!r} is not a pulled track")
            try:
                result = await self._realtime.close_tracks(
                    participant.session_id, list(mids), offer.description
                )
            except RealtimeError as exc:
                raise _realtime_refusal(exc) from None
            for mid in mids:
                participant.pulled.pop(mid, None)
            if result.session_description is None or result.session_description.type != "answer":
                raise WebError(502, "close_failed", "Realtime returned no answer to the close")
            return result.session_description

    async def set_speaking(self, participant: Participant, speaking: bool) -> None:
        if participant.published is None or participant.state is ParticipantState.LEFT:
            return
        await self._directory.set_speaking(
            participant.room, participant.participant_id, MIC_TRACK, speaking
        )

    # -- helpers -------------------------------------------------------------------------------

    def _check_can_change(self, participant: Participant) -> None:
        if participant.state is ParticipantState.LEFT:
            raise WebError(404, "participant_not_found", "no such participant (it has left)")
        if participant.negotiation is Negotiation.AWAITING_ANSWER:
            raise WebError(409, "negotiation_pending", "answer the pending SFU offer first")

    async def _room_publications(self, participant: Participant) -> set[TrackLocator]:
        return {
            TrackLocator(track.session_id, track.track_name)
            for member in await self._directory.members(participant.room)
            for track in member.tracks
        }


def _padded(items: Sequence[TrackResult], count: int) -> list[TrackResult | None]:
    return [*items[:count], *([None] * (count - len(items)))]


def _pulled(locator: TrackLocator, item: TrackResult | None) -> PulledTrack:
    if item is None:
        return PulledTrack(locator, None, "no_result", "Realtime returned no result for this track")
    if item.error is not None or item.mid is None:
        code = item.error.error_code if item.error and item.error.error_code else "not_ready"
        return PulledTrack(
            locator, None, code, item.error.error_description if item.error else "no mid yet"
        )
    return PulledTrack(locator, item.mid)


def _realtime_refusal(exc: RealtimeError) -> WebError:
    """A Realtime failure as the page should see it (never with our credentials in it)."""
    if isinstance(exc, SessionGone):
        return WebError(410, "session_gone", "the media session is gone; rejoin")
    if isinstance(exc, InvalidParams):
        return WebError(
            406,
            "sdp_rejected",
            f"Realtime refused the session description ({exc.error_code or 'invalid'})",
        )
    logger.warning("realtime call failed status=%s code=%s", exc.status, exc.error_code)
    return WebError(502, "realtime_unavailable", "the media service did not answer; try again")
