"""Request bodies of the Realtime API, decoded strictly into typed values.

Cloudflare answers a body whose JSON or field types cannot be decoded with 400
`decoding_error`, and a well-typed body with unusable values with 406 `invalid_params`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ApiError

__all__ = [
    "CloseTracksRequest",
    "DataChannelItem",
    "DataChannelsRequest",
    "EstablishRequest",
    "SessionDescription",
    "TrackItem",
    "TracksRequest",
    "parse_body",
]

Location = Literal["local", "remote"]
MAX_TRACKS_PER_REQUEST = 64


@dataclass(frozen=True, slots=True)
class SessionDescription:
    type: Literal["offer", "answer"]
    sdp: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "sdp": self.sdp}


@dataclass(frozen=True, slots=True)
class TrackItem:
    location: Location
    track_name: str | None
    mid: str | None
    session_id: str | None
    kind: str | None
    bidirectional: bool


@dataclass(frozen=True, slots=True)
class TracksRequest:
    tracks: tuple[TrackItem, ...]
    session_description: SessionDescription | None
    auto_discover: bool


@dataclass(frozen=True, slots=True)
class CloseTracksRequest:
    mids: tuple[str, ...]
    session_description: SessionDescription | None
    force: bool


@dataclass(frozen=True, slots=True)
class DataChannelItem:
    location: Location
    name: str
    session_id: str | None


@dataclass(frozen=True, slots=True)
class DataChannelsRequest:
    channels: tuple[DataChannelItem, ...]


@dataclass(frozen=True, slots=True)
class EstablishRequest:
    """datachannels/establish pulls the SFU's `server-events` channel to set up SCTP."""

    channel_name: str
    session_description: SessionDescription | None


SERVER_EVENTS_CHANNEL = "server-events"


def parse_body(raw: bytes) -> dict[str, Any]:
    """Any Content-Type is accepted (partytracks sends text/plain); an empty body is `{}`."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError.decoding(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError.decoding("request body must be a JSON object")
    return body


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int subclass; never accept it where a number or string is expected
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = "/".join(t.__name__ for t in _as_tuple(kind))
        raise ApiError.decoding(f"{where}{key} must be {names}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _list_of_objects(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = _get(body, key, list, "") or []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError.decoding(f"{key}[{index}] must be an object")
    return items


def session_description(body: dict[str, Any]) -> SessionDescription | None:
    raw = _get(body, "sessionDescription", dict, "")
    if raw is None:
        return None
    kind = _get(raw, "type", str, "sessionDescription.")
    sdp = _get(raw, "sdp", str, "sessionDescription.")
    if kind not in ("offer", "answer"):
        raise ApiError.invalid_sdp(f"sessionDescription.type must be offer or answer, got {kind!r}")
    if not sdp:
        raise ApiError.invalid_sdp("sessionDescription.sdp is empty")
    return SessionDescription(type=kind, sdp=sdp)


def _location(item: dict[str, Any], where: str) -> Location:
    location = _get(item, "location", str, where)
    if location not in ("local", "remote"):
        raise ApiError.invalid_params(f"{where}location must be local or remote, got {location!r}")
    return location  # type: ignore[return-value]


def tracks_request(body: dict[str, Any]) -> TracksRequest:
    items = _list_of_objects(body, "tracks")
    if len(items) > MAX_TRACKS_PER_REQUEST:
        raise ApiError.invalid_params(
            f"at most {MAX_TRACKS_PER_REQUEST} tracks per request, got {len(items)}"
        )
    tracks = []
    for index, item in enumerate(items):
        where = f"tracks[{index}]."
        tracks.append(
            TrackItem(
                location=_location(item, where),
                track_name=_get(item, "trackName", str, where),
                mid=_get(item, "mid", str, where),
                session_id=_get(item, "sessionId", str, where),
                kind=_get(item, "kind", str, where),
                bidirectional=bool(_get(item, "bidirectionalMediaStream", bool, where)),
            )
        )
    return TracksRequest(
        tracks=tuple(tracks),
        session_description=session_description(body),
        auto_discover=bool(_get(body, "autoDiscover", bool, "")),
    )


def close_tracks_request(body: dict[str, Any]) -> CloseTracksRequest:
    items = _list_of_objects(body, "tracks")
    if not items:
        raise ApiError.invalid_params("tracks must list at least one track to close")
    mids = []
    for index, item in enumerate(items):
        mid = _get(item, "mid", str, f"tracks[{index}].")
        if not mid:
            raise ApiError.invalid_params(f"tracks[{index}].mid is required")
        mids.append(mid)
    return CloseTracksRequest(
        mids=tuple(mids),
        session_description=session_description(body),
        force=bool(_get(body, "force", bool, "")),
    )


def datachannels_request(body: dict[str, Any]) -> DataChannelsRequest:
    channels = []
    for index, item in enumerate(_list_of_objects(body, "dataChannels")):
        where = f"dataChannels[{index}]."
        name = _get(item, "dataChannelName", str, where)
        if not name:
            raise ApiError.invalid_params(f"{where}dataChannelName is required")
        channels.append(
            DataChannelItem(
                location=_location(item, where),
                name=name,
                session_id=_get(item, "sessionId", str, where),
            )
        )
    if not channels:
        raise ApiError.invalid_params("dataChannels must list at least one channel")
    return DataChannelsRequest(channels=tuple(channels))


def establish_request(body: dict[str, Any]) -> EstablishRequest:
    channel = _get(body, "dataChannel", dict, "") or {}
    name = _get(channel, "dataChannelName", str, "dataChannel.") or SERVER_EVENTS_CHANNEL
    if name != SERVER_EVENTS_CHANNEL:
        raise ApiError.invalid_params(
            f"datachannels/establish only pulls {SERVER_EVENTS_CHANNEL!r}, got {name!r}"
        )
    return EstablishRequest(channel_name=name, session_description=session_description(body))


def close_datachannels_request(body: dict[str, Any]) -> tuple[int, ...]:
    ids = []
    for index, item in enumerate(_list_of_objects(body, "dataChannels")):
        channel_id = _get(item, "id", int, f"dataChannels[{index}].")
        if channel_id is None:
            raise ApiError.invalid_params(f"dataChannels[{index}].id is required")
        ids.append(channel_id)
    if not ids:
        raise ApiError.invalid_params("dataChannels must list at least one channel id")
    return tuple(ids)
