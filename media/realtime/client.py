"""RealtimeClient: the Cloudflare Realtime SFU API (docs/realtime-api.md), typed and serialized.

Every change to one session runs under that session's lock, because Cloudflare keeps one
offer/answer state machine per session and rejects overlapping changes. A negotiation can
span two requests (tracks/new returns an SFU offer, renegotiate carries the answer), so
methods that may get an offer take `on_offer`: a coroutine that applies the offer to the
peer connection and returns its answer, which the client sends before releasing the lock.
For exchanges driven from outside (a push: offer, tracks/new, apply the answer) hold
`negotiation(session_id)` around the whole exchange.

Requests that change a session are sent once: they run under its lock, and nothing sleeps
while holding a lock. A pull whose publisher is not sending yet comes back as an item error
(not_found_track_error); whoever wants the track (the room reconciler, the page) tries again
later. Requests outside a negotiation (sessions/new, GET) are retried under `retry`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx

from ..backoff import Backoff
from .errors import RealtimeError
from .locks import SessionLocks
from .models import (
    CloseTracksResult,
    DataChannelRequest,
    DataChannelsResult,
    DataChannelTransportResult,
    NewSessionResult,
    SessionDescription,
    SessionState,
    TrackRequest,
    TracksResult,
)
from .rest import DEFAULT_TIMEOUT_S, ApiClient, ErrorObserver, RestApi
from .retry import HTTP_RETRY

__all__ = [
    "MAX_TRACKS_PER_REQUEST",
    "OfferHandler",
    "RealtimeClient",
]

log = logging.getLogger(__name__)

MAX_TRACKS_PER_REQUEST = 64
# datachannels/establish accepts only this channel (Cloudflare's OpenAPI).
SERVER_EVENTS_CHANNEL = "server-events"

OfferHandler = Callable[[SessionDescription], Awaitable[SessionDescription]]
"""Applies an SFU offer to the peer connection and returns the answer to send back."""


class RealtimeClient(ApiClient):
    """Client of one Realtime app. Use as an async context manager (or call `aclose`).

    base_url is the API root including its version, e.g. "https://rtc.live.cloudflare.com/v1"
    or a local SFU's "http://127.0.0.1:PORT/v1". `retry` covers transport errors, 5xx and
    425 on requests outside a negotiation (sessions/new, GET).
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        if not app_id or not app_secret:
            raise ValueError("app_id and app_secret are required")
        self._base_url = base_url.rstrip("/")
        self._app_id = app_id
        self._api = RestApi(
            f"{self._base_url}/apps/{quote(app_id, safe='')}",
            app_secret,
            timeout_s=timeout_s,
            retry=retry or HTTP_RETRY,
            transport=transport,
            on_error=on_error,
        )
        self._locks = SessionLocks()

    def __repr__(self) -> str:
        return f"RealtimeClient(base_url={self._base_url!r}, app_id={self._app_id!r})"

    def negotiation(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Hold `session_id`'s lock across several calls (reentrant for this task), e.g.
        create offer, new_tracks, apply the answer, so no other change slips in between."""
        return self._locks.hold(session_id)

    async def new_session(
        self,
        offer: SessionDescription | None = None,
        *,
        correlation_id: str | None = None,
        thirdparty: bool = False,
        retry: bool = True,
        timeout_s: float | None = None,
    ) -> NewSessionResult:
        """Create a session. `retry` False sends once (a caller that retries on its own
        schedule, such as a peer's recovery, must not stack a second backoff under it)."""
        params = {"thirdparty": "true"} if thirdparty else {}
        if correlation_id is not None:
            params["correlationId"] = correlation_id
        payload = await self._api.request(
            "POST",
            "sessions/new",
            op="sessions/new",
            body={"sessionDescription": offer.to_json()} if offer else None,
            params=params or None,
            retry=retry,
            timeout_s=timeout_s,
        )
        result = _decode(NewSessionResult.from_json, payload, "sessions/new")
        log.info("realtime session created op=sessions/new session_id=%s", result.session_id)
        return result

    async def new_tracks(
        self,
        session_id: str,
        tracks: Sequence[TrackRequest],
        offer: SessionDescription | None = None,
        *,
        auto_discover: bool = False,
        on_offer: OfferHandler | None = None,
    ) -> TracksResult:
        """Push (local) or pull (remote) tracks.

        Item errors (a pull whose publisher is not sending yet: not_found_track_error) are
        returned in `TrackResult.error`. More than 64 tracks go in sequential batches, each of which
        must finish its negotiation first: that needs `on_offer` and no caller offer (an
        offer describes the whole connection and cannot be split).
        """
        requests = tuple(tracks)
        if not requests and not auto_discover:
            raise ValueError("new_tracks needs tracks (or auto_discover with an offer)")
        if len({track.location for track in requests}) > 1:
            raise ValueError("one tracks/new call takes only pushes or only pulls")
        batches = _negotiated_batches(requests, offer, on_offer)
        async with self._locks.hold(session_id):
            results = [
                await self._tracks_call(
                    session_id,
                    "POST",
                    "tracks/new",
                    _tracks_body(batch, offer, auto_discover),
                    on_offer,
                )
                for batch in batches
            ]
        return _merge(results)

    async def update_tracks(
        self,
        session_id: str,
        tracks: Sequence[TrackRequest],
        offer: SessionDescription | None = None,
        *,
        on_offer: OfferHandler | None = None,
    ) -> TracksResult:
        """Point existing transceivers (by mid) at other tracks; batched like new_tracks."""
        requests = tuple(tracks)
        if not requests:
            raise ValueError("update_tracks needs at least one track")
        batches = _negotiated_batches(requests, offer, on_offer)
        async with self._locks.hold(session_id):
            results = [
                await self._tracks_call(
                    session_id, "PUT", "tracks/update", _tracks_body(batch, offer), on_offer
                )
                for batch in batches
            ]
        return _merge(results)

    async def renegotiate(self, session_id: str, answer: SessionDescription) -> None:
        """Send the answer to an SFU offer (`requires_immediate_renegotiation`)."""
        async with self._locks.hold(session_id):
            await self._put_answer(session_id, answer)

    async def close_tracks(
        self,
        session_id: str,
        mids: Sequence[str],
        offer: SessionDescription | None = None,
        force: bool = False,
    ) -> CloseTracksResult:
        """Close tracks by this session's mids.

        force=False is a negotiated close: `offer` (with those transceivers stopped) is
        required and the result carries the answer. force=True stops forwarding without
        SDP; then more than 64 mids go in sequential batches. Item results may report
        close_track_error (already closed).
        """
        mids = tuple(mids)
        if not mids:
            raise ValueError("close_tracks needs at least one mid (Cloudflare answers 406)")
        if not force and offer is None:
            raise ValueError("a negotiated close (force=False) needs the endpoint's offer")
        if offer is not None and len(mids) > MAX_TRACKS_PER_REQUEST:
            raise ValueError(
                f"an SDP offer cannot be split: close at most {MAX_TRACKS_PER_REQUEST} "
                "mids with an offer, or use force=True"
            )
        path = _session_path(session_id, "tracks/close")
        results = []
        async with self._locks.hold(session_id):
            for chunk in _chunks(mids):
                body: dict[str, Any] = {"tracks": [{"mid": mid} for mid in chunk], "force": force}
                if offer is not None:
                    body["sessionDescription"] = offer.to_json()
                payload = await self._api.request(
                    "PUT", path, op="tracks/close", session_id=session_id, body=body, retry=False
                )
                results.append(_decode(TracksResult.from_json, payload, "tracks/close"))
        return _merge(results)

    async def get_session(self, session_id: str) -> SessionState:
        # A read: it cannot disturb a negotiation, so it does not wait for the session lock.
        payload = await self._api.request(
            "GET", _session_path(session_id, ""), op="sessions/get", session_id=session_id
        )
        return _decode(SessionState.from_json, payload, "sessions/get")

    async def probe_session(self, session_id: str, timeout_s: float) -> None:
        """One GET of the session, no retry, within `timeout_s`: returns if the SFU knows it,
        raises `SessionGone` if it does not, `TransientError` if the SFU did not answer."""
        await self._api.request(
            "GET",
            _session_path(session_id, ""),
            op="sessions/probe",
            session_id=session_id,
            retry=False,
            timeout_s=timeout_s,
        )

    async def datachannels_establish(
        self,
        session_id: str,
        offer: SessionDescription | None = None,
        *,
        on_offer: OfferHandler | None = None,
    ) -> DataChannelTransportResult:
        """Set up the session's SCTP transport by pulling the `server-events` channel.

        Without `offer` the SFU offers; `on_offer` then answers within the session lock.
        """
        body: dict[str, Any] = {
            "dataChannel": DataChannelRequest("remote", SERVER_EVENTS_CHANNEL, None).to_json()
        }
        if offer is not None:
            body["sessionDescription"] = offer.to_json()
        op = "datachannels/establish"
        async with self._locks.hold(session_id):
            payload = await self._api.request(
                "POST",
                _session_path(session_id, op),
                op=op,
                session_id=session_id,
                body=body,
                creates=True,
                retry=False,
            )
            result = _decode(DataChannelTransportResult.from_json, payload, op)
            if await self._answer_offer(session_id, result.session_description, on_offer):
                result = replace(
                    result, session_description=None, requires_immediate_renegotiation=False
                )
        return result

    async def datachannels_new(
        self, session_id: str, channels: Sequence[DataChannelRequest]
    ) -> DataChannelsResult:
        """Publish (local) or subscribe to (remote) named channels over the transport."""
        channels = tuple(channels)
        if not channels:
            raise ValueError("datachannels_new needs at least one channel")
        if len({channel.location for channel in channels}) > 1:
            raise ValueError("one datachannels/new call takes only local or only remote channels")
        body = {"dataChannels": [channel.to_json() for channel in channels]}
        return await self._datachannels_call(session_id, "POST", "datachannels/new", body)

    async def datachannels_close(self, session_id: str, ids: Sequence[int]) -> DataChannelsResult:
        """Close channels by the ids allocated on this session."""
        ids = tuple(ids)
        if not ids:
            raise ValueError("datachannels_close needs at least one channel id")
        body = {"dataChannels": [{"id": channel_id} for channel_id in ids]}
        return await self._datachannels_call(session_id, "PUT", "datachannels/close", body)

    async def _tracks_call(
        self,
        session_id: str,
        method: str,
        op: str,
        body: Mapping[str, Any],
        on_offer: OfferHandler | None,
    ) -> TracksResult:
        payload = await self._api.request(
            method,
            _session_path(session_id, op),
            op=op,
            session_id=session_id,
            body=body,
            creates=op == "tracks/new",
            retry=False,
        )
        result = _decode(TracksResult.from_json, payload, op)
        for failed in result.failed:
            if failed.error is not None:
                self._api.observe(failed.error)
            log.info(
                "realtime item error op=%s session_id=%s track_name=%s error_code=%s",
                op,
                session_id,
                failed.track_name,
                failed.error.error_code if failed.error else None,
            )
        if await self._answer_offer(session_id, result.session_description, on_offer):
            return replace(result, session_description=None, requires_immediate_renegotiation=False)
        return result

    async def _answer_offer(
        self,
        session_id: str,
        description: SessionDescription | None,
        on_offer: OfferHandler | None,
    ) -> bool:
        """Answer an SFU offer through `on_offer` (the type decides, not only the flag)."""
        if on_offer is None or description is None or description.type != "offer":
            return False
        await self._put_answer(session_id, await on_offer(description))
        return True

    async def _put_answer(self, session_id: str, answer: SessionDescription) -> None:
        if answer.type != "answer":
            raise ValueError(f"renegotiate takes an answer, not an {answer.type}")
        await self._api.request(
            "PUT",
            _session_path(session_id, "renegotiate"),
            op="renegotiate",
            session_id=session_id,
            body={"sessionDescription": answer.to_json()},
            retry=False,
        )

    async def _datachannels_call(
        self, session_id: str, method: str, op: str, body: Mapping[str, Any]
    ) -> DataChannelsResult:
        async with self._locks.hold(session_id):
            payload = await self._api.request(
                method,
                _session_path(session_id, op),
                op=op,
                session_id=session_id,
                body=body,
                creates=op == "datachannels/new",
                retry=False,
            )
        return _decode(DataChannelsResult.from_json, payload, op)


def _session_path(session_id: str, tail: str) -> str:
    path = f"sessions/{quote(session_id, safe='')}"
    return f"{path}/{tail}" if tail else path


def _tracks_body(
    tracks: Sequence[TrackRequest], offer: SessionDescription | None, auto_discover: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"tracks": [track.to_json() for track in tracks]}
    if offer is not None:
        body["sessionDescription"] = offer.to_json()
    if auto_discover:
        body["autoDiscover"] = True
    return body


def _chunks[T](items: tuple[T, ...]) -> list[tuple[T, ...]]:
    step = MAX_TRACKS_PER_REQUEST
    return [items[start : start + step] for start in range(0, len(items), step)] or [()]


def _negotiated_batches(
    tracks: tuple[TrackRequest, ...],
    offer: SessionDescription | None,
    on_offer: OfferHandler | None,
) -> list[tuple[TrackRequest, ...]]:
    if len(tracks) <= MAX_TRACKS_PER_REQUEST:
        return [tracks]
    if offer is not None:
        raise ValueError(
            f"an SDP offer describes the whole connection and cannot be split over requests "
            f"of {MAX_TRACKS_PER_REQUEST} tracks: send at most {MAX_TRACKS_PER_REQUEST} "
            "tracks with an offer"
        )
    if on_offer is None:
        raise ValueError(
            f"more than {MAX_TRACKS_PER_REQUEST} tracks go in batches whose negotiations "
            "must each finish before the next: pass on_offer"
        )
    return _chunks(tracks)


def _merge(results: Sequence[TracksResult]) -> TracksResult:
    # Only the last batch can leave SDP for the caller: earlier ones were answered by on_offer.
    last = results[-1]
    return TracksResult(
        tuple(track for result in results for track in result.tracks),
        last.session_description,
        last.requires_immediate_renegotiation,
    )


def _decode[T](decode: Callable[[Mapping[str, Any]], T], payload: Mapping[str, Any], op: str) -> T:
    try:
        return decode(payload)
    except ValueError as exc:
        raise RealtimeError(f"{op} failed: unexpected response: {exc}") from exc
