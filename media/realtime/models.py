"""Request and response bodies of the Cloudflare Realtime and TURN APIs as typed values.

Field names follow the API as served (docs/realtime-api.md §4): a publication is identified by the
publisher's `sessionId` plus `trackName` (there is no `trackId`), and a `mid` is local to
one peer connection. `from_json` ignores keys it does not know, so additions on
Cloudflare's side never break decoding; it raises ValueError when a field it needs is
missing or of the wrong type. `to_json` omits absent optional fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import RealtimeItemError

__all__ = [
    "CloseTracksResult",
    "DataChannelRequest",
    "DataChannelResult",
    "DataChannelTransportResult",
    "DataChannelsResult",
    "IceServer",
    "IceServers",
    "Location",
    "NewSessionResult",
    "SessionDataChannel",
    "SessionDescription",
    "SessionState",
    "SessionTrack",
    "TrackLocator",
    "TrackRequest",
    "TrackResult",
    "TracksResult",
]

Location = Literal["local", "remote"]
JsonObject = dict[str, Any]


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"expected a string {key!r}, got {value!r}")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    # bool is an int in Python but never a channel id.
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _location(data: Mapping[str, Any]) -> Location | None:
    value = data.get("location")
    return value if value in ("local", "remote") else None


def _objects(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list {key!r}, got {value!r}")
    return [item for item in value if isinstance(item, Mapping)]


def _omit_none(**fields: Any) -> JsonObject:
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class SessionDescription:
    type: Literal["offer", "answer"]
    sdp: str

    def __post_init__(self) -> None:
        if self.type not in ("offer", "answer"):
            raise ValueError(f"session description type must be offer or answer: {self.type!r}")

    def to_json(self) -> JsonObject:
        return {"type": self.type, "sdp": self.sdp}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionDescription:
        match _str(data, "type"):
            case "offer" | "answer" as kind:
                return cls(kind, _str(data, "sdp"))
            case other:
                raise ValueError(f"session description type must be offer or answer: {other!r}")

    @classmethod
    def from_optional(cls, data: Mapping[str, Any], key: str) -> SessionDescription | None:
        value = data.get(key)
        return cls.from_json(value) if isinstance(value, Mapping) else None


@dataclass(frozen=True, slots=True)
class TrackLocator:
    """A publication: the publisher's session plus its track name."""

    session_id: str
    track_name: str

    def to_json(self) -> JsonObject:
        return {"sessionId": self.session_id, "trackName": self.track_name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackLocator:
        return cls(_str(data, "sessionId"), _str(data, "trackName"))


@dataclass(frozen=True, slots=True)
class TrackRequest:
    """One entry of `tracks` in tracks/new or tracks/update.

    Push: `location="local"` with the `mid` of the sending transceiver in the caller's offer.
    Pull: `location="remote"` with the publisher's `session_id`; `mid="#<trackName>"`
    reuses a transceiver. `kind` ("audio"/"video") is needed only when the SFU writes the
    offer for a push.
    """

    location: Location
    track_name: str
    mid: str | None = None
    session_id: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.location == "remote" and not self.session_id:
            raise ValueError("a remote (pull) track needs the publisher's session_id")
        if self.location == "local" and self.session_id is not None:
            raise ValueError("a local (push) track belongs to this session: no session_id")

    @classmethod
    def push(
        cls, track_name: str, mid: str | None = None, *, kind: str | None = None
    ) -> TrackRequest:
        return cls("local", track_name, mid=mid, kind=kind)

    @classmethod
    def pull(cls, locator: TrackLocator, *, mid: str | None = None) -> TrackRequest:
        return cls("remote", locator.track_name, mid=mid, session_id=locator.session_id)

    def to_json(self) -> JsonObject:
        return _omit_none(
            location=self.location,
            mid=self.mid,
            sessionId=self.session_id,
            trackName=self.track_name,
            kind=self.kind,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackRequest:
        location = _location(data)
        if location is None:
            raise ValueError(f"expected location local or remote, got {data.get('location')!r}")
        return cls(
            location,
            _str(data, "trackName"),
            mid=_opt_str(data, "mid"),
            session_id=_opt_str(data, "sessionId"),
            kind=_opt_str(data, "kind"),
        )


@dataclass(frozen=True, slots=True)
class TrackResult:
    """One entry of `tracks` in a tracks/new, tracks/update or tracks/close response."""

    mid: str | None
    track_name: str | None = None
    session_id: str | None = None
    error: RealtimeItemError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> JsonObject:
        data = _omit_none(mid=self.mid, sessionId=self.session_id, trackName=self.track_name)
        return data | (self.error.to_json() if self.error else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackResult:
        return cls(
            # Cloudflare answers a failed pull with mid "": it names no transceiver.
            mid=_opt_str(data, "mid") or None,
            track_name=_opt_str(data, "trackName"),
            session_id=_opt_str(data, "sessionId"),
            error=RealtimeItemError.from_item(data),
        )


@dataclass(frozen=True, slots=True)
class TracksResult:
    """Response of tracks/new, tracks/update and tracks/close.

    A 200 can carry failed items: check `failed`. When `session_description` is an offer
    (`requires_immediate_renegotiation`), answer it with `renegotiate` before anything else.
    """

    tracks: tuple[TrackResult, ...]
    session_description: SessionDescription | None = None
    requires_immediate_renegotiation: bool = False

    @property
    def failed(self) -> tuple[TrackResult, ...]:
        return tuple(track for track in self.tracks if track.error is not None)

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "tracks": [track.to_json() for track in self.tracks],
            "requiresImmediateRenegotiation": self.requires_immediate_renegotiation,
        }
        if self.session_description is not None:
            data["sessionDescription"] = self.session_description.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TracksResult:
        return cls(
            tracks=tuple(TrackResult.from_json(item) for item in _objects(data, "tracks")),
            session_description=SessionDescription.from_optional(data, "sessionDescription"),
            requires_immediate_renegotiation=data.get("requiresImmediateRenegotiation") is True,
        )


# Cloudflare's CloseTracksResponse has exactly the fields of TracksResponse (results keyed by mid).
CloseTracksResult = TracksResult


@dataclass(frozen=True, slots=True)
class NewSessionResult:
    session_id: str
    session_description: SessionDescription | None = None

    def to_json(self) -> JsonObject:
        data: JsonObject = {"sessionId": self.session_id}
        if self.session_description is not None:
            data["sessionDescription"] = self.session_description.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NewSessionResult:
        return cls(
            _str(data, "sessionId"),
            SessionDescription.from_optional(data, "sessionDescription"),
        )


@dataclass(frozen=True, slots=True)
class SessionTrack:
    """A track as GET /sessions/{id} lists it.

    `status` stays a plain string: Cloudflare documents `active|inactive|initializing` now
    and documented `waiting` before, so unknown values must not fail decoding.
    """

    location: Location | None
    mid: str | None
    track_name: str | None
    session_id: str | None
    status: str | None

    def to_json(self) -> JsonObject:
        return _omit_none(
            location=self.location,
            mid=self.mid,
            trackName=self.track_name,
            sessionId=self.session_id,
            status=self.status,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionTrack:
        return cls(
            location=_location(data),
            mid=_opt_str(data, "mid"),
            track_name=_opt_str(data, "trackName"),
            session_id=_opt_str(data, "sessionId"),
            status=_opt_str(data, "status"),
        )


@dataclass(frozen=True, slots=True)
class SessionDataChannel:
    location: Location | None
    data_channel_name: str | None
    session_id: str | None
    id: int | None
    status: str | None

    def to_json(self) -> JsonObject:
        return _omit_none(
            location=self.location,
            dataChannelName=self.data_channel_name,
            sessionId=self.session_id,
            id=self.id,
            status=self.status,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionDataChannel:
        return cls(
            location=_location(data),
            data_channel_name=_opt_str(data, "dataChannelName"),
            session_id=_opt_str(data, "sessionId"),
            id=_opt_int(data, "id"),
            status=_opt_str(data, "status"),
        )


@dataclass(frozen=True, slots=True)
class SessionState:
    tracks: tuple[SessionTrack, ...]
    data_channels: tuple[SessionDataChannel, ...] = ()

    def to_json(self) -> JsonObject:
        return {
            "tracks": [track.to_json() for track in self.tracks],
            "dataChannels": [channel.to_json() for channel in self.data_channels],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionState:
        return cls(
            tracks=tuple(SessionTrack.from_json(item) for item in _objects(data, "tracks")),
            data_channels=tuple(
                SessionDataChannel.from_json(item) for item in _objects(data, "dataChannels")
            ),
        )


@dataclass(frozen=True, slots=True)
class DataChannelRequest:
    """One entry of `dataChannels` in datachannels/new: publish (`local`) a named channel,
    or subscribe (`remote`) to another session's."""

    location: Location
    data_channel_name: str
    # None also for the one remote channel without a publisher: the SFU's `server-events`.
    session_id: str | None = None

    @classmethod
    def push(cls, name: str) -> DataChannelRequest:
        return cls("local", name)

    @classmethod
    def pull(cls, session_id: str, name: str) -> DataChannelRequest:
        return cls("remote", name, session_id)

    def to_json(self) -> JsonObject:
        return _omit_none(
            location=self.location,
            dataChannelName=self.data_channel_name,
            sessionId=self.session_id,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataChannelRequest:
        location = _location(data)
        if location is None:
            raise ValueError(f"expected location local or remote, got {data.get('location')!r}")
        return cls(location, _str(data, "dataChannelName"), _opt_str(data, "sessionId"))


@dataclass(frozen=True, slots=True)
class DataChannelResult:
    """A data channel in a datachannels/* response; `id` is the negotiated SCTP stream id
    to open it with (`negotiated=True`) on this session's peer connection."""

    data_channel_name: str | None
    id: int | None
    location: Location | None = None
    session_id: str | None = None
    error: RealtimeItemError | None = None

    def to_json(self) -> JsonObject:
        data = _omit_none(
            location=self.location,
            dataChannelName=self.data_channel_name,
            sessionId=self.session_id,
            id=self.id,
        )
        return data | (self.error.to_json() if self.error else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataChannelResult:
        return cls(
            data_channel_name=_opt_str(data, "dataChannelName"),
            id=_opt_int(data, "id"),
            location=_location(data),
            session_id=_opt_str(data, "sessionId"),
            error=RealtimeItemError.from_item(data),
        )


@dataclass(frozen=True, slots=True)
class DataChannelsResult:
    data_channels: tuple[DataChannelResult, ...]

    def to_json(self) -> JsonObject:
        return {"dataChannels": [channel.to_json() for channel in self.data_channels]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataChannelsResult:
        return cls(
            tuple(DataChannelResult.from_json(item) for item in _objects(data, "dataChannels"))
        )


@dataclass(frozen=True, slots=True)
class DataChannelTransportResult:
    """Response of datachannels/establish (a single `dataChannel`, the `server-events` one)."""

    data_channel: DataChannelResult | None
    session_description: SessionDescription | None = None
    requires_immediate_renegotiation: bool = False

    def to_json(self) -> JsonObject:
        data: JsonObject = {"requiresImmediateRenegotiation": self.requires_immediate_renegotiation}
        if self.data_channel is not None:
            data["dataChannel"] = self.data_channel.to_json()
        if self.session_description is not None:
            data["sessionDescription"] = self.session_description.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataChannelTransportResult:
        channel = data.get("dataChannel")
        return cls(
            data_channel=DataChannelResult.from_json(channel)
            if isinstance(channel, Mapping)
            else None,
            session_description=SessionDescription.from_optional(data, "sessionDescription"),
            requires_immediate_renegotiation=data.get("requiresImmediateRenegotiation") is True,
        )


def _port(url: str) -> str | None:
    """Port of a STUN/TURN URL such as `turn:host:53?transport=udp` or `stun:[::1]:3478`."""
    _, _, rest = url.partition(":")
    host_port = rest.split("?", 1)[0]
    host_end = host_port.rfind("]")  # skip an IPv6 literal's colons
    _, sep, port = host_port[host_end + 1 :].rpartition(":")
    return port if sep else None


@dataclass(frozen=True, slots=True)
class IceServer:
    """An RTCIceServer. The credential is short-lived but still kept out of reprs."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def to_json(self) -> JsonObject:
        return {"urls": list(self.urls)} | _omit_none(
            username=self.username, credential=self.credential
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IceServer:
        urls = data.get("urls")
        # RTCIceServer allows a single URL string as well as a list.
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            raise ValueError(f"expected urls as a string or a list of strings, got {urls!r}")
        return cls(tuple(urls), _opt_str(data, "username"), _opt_str(data, "credential"))


@dataclass(frozen=True, slots=True)
class IceServers:
    """`iceServers` of a TURN credentials response."""

    servers: tuple[IceServer, ...]

    @property
    def username(self) -> str | None:
        """The TURN username, which is also what `TurnClient.revoke` takes."""
        return next((server.username for server in self.servers if server.username), None)

    def for_browser(self) -> IceServers:
        """Without port-53 URLs: browsers block that port, so without trickle ICE a client
        would wait for those candidates to time out (Cloudflare's TURN docs)."""
        kept = []
        for server in self.servers:
            urls = tuple(url for url in server.urls if _port(url) != "53")
            if urls:
                kept.append(IceServer(urls, server.username, server.credential))
        return IceServers(tuple(kept))

    def to_json(self) -> JsonObject:
        return {"iceServers": [server.to_json() for server in self.servers]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IceServers:
        value = data.get("iceServers")
        # generate-ice-servers returns a list; the legacy credentials/generate one object.
        if isinstance(value, Mapping):
            return cls((IceServer.from_json(value),))
        if isinstance(value, list):
            return cls(
                tuple(IceServer.from_json(item) for item in value if isinstance(item, Mapping))
            )
        raise ValueError(f"expected iceServers as an object or a list, got {value!r}")
