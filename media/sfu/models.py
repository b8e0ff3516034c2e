"""Request bodies of the Realtime API, decoded strictly into typed values.

Cloudflare answers a body whose JSON or field types cannot be decoded with 400
`decoding_error`, and a well-typed body with unusable values with 406 `invalid_params`
(`invalid_session_description` for SDP). Decoding happens in that order for the whole body:
every field's type is checked before any value is judged, so a body with both a wrong type
and a bad value is a 400 wherever the two sit. Unknown fields are ignored and `null` counts
as absent, as Cloudflare's decoder does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from .datachannels import MAX_CHANNELS_PER_REQUEST
from .errors import ApiError

__all__ = [
    "MAX_TRACKS_PER_REQUEST",
    "SERVER_EVENTS_CHANNEL",
    "CloseTracksRequest",
    "DataChannelItem",
    "DataChannelsRequest",
    "EstablishRequest",
    "SessionDescription",
    "TrackItem",
    "TracksRequest",
    "TurnCredentialsRequest",
    "close_datachannels_request",
    "close_tracks_request",
    "datachannels_request",
    "establish_request",
    "parse_body",
    "session_description",
    "tracks_request",
    "turn_credentials_request",
]

Location = Literal["local", "remote"]
MAX_TRACKS_PER_REQUEST = 64
SERVER_EVENTS_CHANNEL = "server-events"


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


@dataclass(frozen=True, slots=True)
class TurnCredentialsRequest:
    ttl: int | None


# -- phase 1: JSON and field types (400 decoding_error) -------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """Any Content-Type is accepted (partytracks sends text/plain); an empty body is `{}`."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers malformed JSON, bytes that are no Unicode text, and integers past
        # Python's digit limit; RecursionError covers hostile nesting depth.
        raise ApiError.decoding(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ApiError.decoding("request body must be a JSON object")
    return body


class _Obj:
    """Field name -> expected type of a JSON object; other fields are ignored."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields


class _Arr:
    def __init__(self, items: Any) -> None:
        self.items = items


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer"}


def _check(value: Any, spec: Any, where: str) -> None:
    """Raise 400 decoding_error unless `value` (not None) has the shape `spec` describes."""
    if isinstance(spec, _Obj):
        if not isinstance(value, dict):
            raise ApiError.decoding(f"{where} must be an object, got {_json_type(value)}")
        for key, field_spec in spec.fields.items():
            if value.get(key) is not None:
                _check(value[key], field_spec, f"{where}.{key}" if where else key)
        return
    if isinstance(spec, _Arr):
        if not isinstance(value, list):
            raise ApiError.decoding(f"{where} must be an array, got {_json_type(value)}")
        for index, item in enumerate(value):
            _check(item, spec.items, f"{where}[{index}]")
        return
    if spec is bool:
        ok = isinstance(value, bool)
    else:  # bool is an int subclass in Python; JSON keeps them apart
        ok = isinstance(value, spec) and not isinstance(value, bool)
    if not ok:
        raise ApiError.decoding(f"{where} must be {_TYPE_NAMES[spec]}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_DESCRIPTION = _Obj(type=str, sdp=str)
_TRACK = _Obj(
    location=str,
    mid=str,
    sessionId=str,
    trackName=str,
    kind=str,
    bidirectionalMediaStream=bool,
    simulcast=_Obj(preferredRid=str, priorityOrdering=str, ridNotAvailable=str),
)
_TRACKS_REQUEST = _Obj(sessionDescription=_DESCRIPTION, tracks=_Arr(_TRACK), autoDiscover=bool)
_CLOSE_TRACKS_REQUEST = _Obj(
    sessionDescription=_DESCRIPTION, tracks=_Arr(_Obj(mid=str)), force=bool
)
_DATACHANNEL = _Obj(
    location=str,
    sessionId=str,
    dataChannelName=str,
    ordered=bool,
    maxRetransmits=int,
    maxPacketLifeTime=int,
    waitForAck=bool,
    canReply=bool,
    id=int,
)
_DATACHANNELS_REQUEST = _Obj(dataChannels=_Arr(_DATACHANNEL))
_ESTABLISH_REQUEST = _Obj(sessionDescription=_DESCRIPTION, dataChannel=_DATACHANNEL)
_SESSION_REQUEST = _Obj(sessionDescription=_DESCRIPTION)
_TURN_REQUEST = _Obj(ttl=int)


# -- phase 2: values (406) -------------------------------------------------------------------


def _description(raw: dict[str, Any] | None) -> SessionDescription | None:
    if raw is None:
        return None
    kind, sdp = raw.get("type"), raw.get("sdp")
    if kind not in ("offer", "answer"):
        raise ApiError.invalid_sdp(f"sessionDescription.type must be offer or answer, got {kind!r}")
    if not sdp:
        raise ApiError.invalid_sdp("sessionDescription.sdp is empty")
    return SessionDescription(type=kind, sdp=sdp)


def _location(item: dict[str, Any], where: str) -> Location:
    location = item.get("location")
    if location not in ("local", "remote"):
        raise ApiError.invalid_params(f"{where}.location must be local or remote, got {location!r}")
    return location  # type: ignore[return-value]


def _items(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return body.get(key) or []


def _at_most(items: list[Any], what: str) -> None:
    if len(items) > MAX_TRACKS_PER_REQUEST:
        raise ApiError.invalid_params(
            f"at most {MAX_TRACKS_PER_REQUEST} {what} per request, got {len(items)}"
        )


def _non_negative(item: dict[str, Any], key: str, where: str) -> None:
    value = item.get(key)
    if value is not None and value < 0:
        raise ApiError.invalid_params(f"{where}.{key} must not be negative, got {value}")


def session_description(body: dict[str, Any]) -> SessionDescription | None:
    """`sessionDescription` of a body (sessions/new, renegotiate), or None when absent."""
    _check(body, _SESSION_REQUEST, "")
    return _description(body.get("sessionDescription"))


def tracks_request(body: dict[str, Any]) -> TracksRequest:
    """tracks/new and tracks/update."""
    _check(body, _TRACKS_REQUEST, "")
    items = _items(body, "tracks")
    _at_most(items, "tracks")
    tracks = []
    for index, item in enumerate(items):
        where = f"tracks[{index}]"
        simulcast = item.get("simulcast") or {}
        for key in ("priorityOrdering", "ridNotAvailable"):
            if simulcast.get(key) not in (None, "none", "asciibetical"):
                raise ApiError.invalid_params(
                    f"{where}.simulcast.{key} must be none or asciibetical, got {simulcast[key]!r}"
                )
        tracks.append(
            TrackItem(
                location=_location(item, where),
                track_name=item.get("trackName"),
                mid=item.get("mid"),
                session_id=item.get("sessionId"),
                kind=item.get("kind"),
                bidirectional=bool(item.get("bidirectionalMediaStream")),
            )
        )
    return TracksRequest(
        tracks=tuple(tracks),
        session_description=_description(body.get("sessionDescription")),
        auto_discover=bool(body.get("autoDiscover")),
    )


def close_tracks_request(body: dict[str, Any]) -> CloseTracksRequest:
    _check(body, _CLOSE_TRACKS_REQUEST, "")
    items = _items(body, "tracks")
    if not items:
        raise ApiError.invalid_params("tracks must list at least one track to close")
    _at_most(items, "tracks")
    mids = []
    for index, item in enumerate(items):
        mid = item.get("mid")
        if not mid:
            raise ApiError.invalid_params(f"tracks[{index}].mid is required")
        mids.append(mid)
    return CloseTracksRequest(
        mids=tuple(mids),
        session_description=_description(body.get("sessionDescription")),
        force=bool(body.get("force")),
    )


def _channel_options(item: dict[str, Any], where: str) -> None:
    _non_negative(item, "maxRetransmits", where)
    _non_negative(item, "maxPacketLifeTime", where)
    _non_negative(item, "id", where)


def datachannels_request(body: dict[str, Any]) -> DataChannelsRequest:
    _check(body, _DATACHANNELS_REQUEST, "")
    items = _items(body, "dataChannels")
    if not items:
        raise ApiError.invalid_params("dataChannels must list at least one channel")
    if len(items) > MAX_CHANNELS_PER_REQUEST:
        raise ApiError.invalid_params(
            f"dataChannels may list at most {MAX_CHANNELS_PER_REQUEST} channels per request"
        )
    channels = []
    for index, item in enumerate(items):
        where = f"dataChannels[{index}]"
        location = _location(item, where)
        name = item.get("dataChannelName")
        if not name:
            raise ApiError.invalid_params(f"{where}.dataChannelName is required")
        _channel_options(item, where)
        channels.append(
            DataChannelItem(location=location, name=name, session_id=item.get("sessionId"))
        )
    return DataChannelsRequest(channels=tuple(channels))


def establish_request(body: dict[str, Any]) -> EstablishRequest:
    _check(body, _ESTABLISH_REQUEST, "")
    channel = body.get("dataChannel") or {}
    name = channel.get("dataChannelName") or SERVER_EVENTS_CHANNEL
    if name != SERVER_EVENTS_CHANNEL:
        raise ApiError.invalid_params(
            f"datachannels/establish only pulls {SERVER_EVENTS_CHANNEL!r}, got {name!r}"
        )
    if channel.get("location") not in (None, "remote"):
        raise ApiError.invalid_params(
            f"dataChannel.location must be remote (the SFU's channel), got {channel['location']!r}"
        )
    _channel_options(channel, "dataChannel")
    return EstablishRequest(
        channel_name=name, session_description=_description(body.get("sessionDescription"))
    )


def close_datachannels_request(body: dict[str, Any]) -> tuple[int, ...]:
    _check(body, _DATACHANNELS_REQUEST, "")
    items = _items(body, "dataChannels")
    if not items:
        raise ApiError.invalid_params("dataChannels must list at least one channel id")
    ids = []
    for index, item in enumerate(items):
        channel_id = item.get("id")
        if channel_id is None:
            raise ApiError.invalid_params(f"dataChannels[{index}].id is required")
        _channel_options(item, f"dataChannels[{index}]")
        ids.append(channel_id)
    return tuple(ids)


def turn_credentials_request(body: dict[str, Any]) -> TurnCredentialsRequest:
    """TURN generate-ice-servers / generate: `{"ttl": seconds}` (optional here)."""
    _check(body, _TURN_REQUEST, "")
    ttl = body.get("ttl")
    if ttl is not None and ttl <= 0:
        raise ApiError.invalid_params(f"ttl must be a positive number of seconds, got {ttl}")
    return TurnCredentialsRequest(ttl=ttl)
