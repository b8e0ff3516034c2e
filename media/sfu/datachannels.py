"""DataChannel relay: a session publishes a named channel; subscribers get their own copy.

Channels are negotiated (`negotiated: true`) with ids the SFU allocates per session, as on
Cloudflare; messages a publisher sends are relayed to every subscriber's channel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCDataChannel

from .errors import ItemError

__all__ = [
    "MAX_CHANNELS_PER_REQUEST",
    "MAX_CHANNELS_PER_SESSION",
    "ChannelIds",
    "ChannelPublication",
    "ChannelResult",
    "ChannelStatus",
]

logger = logging.getLogger(__name__)

MAX_CHANNELS_PER_REQUEST = 64
MAX_CHANNELS_PER_SESSION = 256
"""Open channels the SFU keeps for one session (each costs an SCTP stream and a relay)."""
MAX_STREAM_ID = 65534
"""SCTP stream ids are 16 bits; 65535 is reserved (RFC 8831)."""


class ChannelIdsExhausted(Exception):
    """No SCTP stream id of the SFU's parity is left on this session."""


class ChannelIds:
    """The SCTP stream ids the SFU gives its channels on one session.

    RFC 8832: in-band channels take even ids on the DTLS client and odd ones on the server;
    the SFU allocates from its own parity, so it keeps clear of the client's channels. A
    running next id makes each allocation O(1) (ids are not reused after a close).
    """

    def __init__(self) -> None:
        self._next: int | None = None

    def allocate(self, dtls_role: str, taken: Callable[[int], bool]) -> int:
        parity = 0 if dtls_role == "client" else 1
        candidate = self._next if self._next is not None and self._next % 2 == parity else parity
        while taken(candidate):
            candidate += 2
        if candidate > MAX_STREAM_ID:
            raise ChannelIdsExhausted("no datachannel id is left on this session")
        self._next = candidate + 2
        return candidate


@dataclass(frozen=True, slots=True)
class ChannelResult:
    location: str
    name: str
    session_id: str | None = None
    channel_id: int | None = None
    error: ItemError | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"location": self.location, "dataChannelName": self.name}
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        if self.channel_id is not None:
            out["id"] = self.channel_id
        if self.error is not None:
            out.update(self.error.to_json())
        return out


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    location: str
    name: str
    channel_id: int
    status: str
    session_id: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "location": self.location,
            "dataChannelName": self.name,
            "id": self.channel_id,
            "status": self.status,
        }
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        return out


def channel_status(channel: RTCDataChannel) -> str:
    return {"connecting": "initializing", "open": "active"}.get(channel.readyState, "inactive")


class ChannelPublication:
    """The publisher's channel and the subscribers' channels it relays to."""

    def __init__(self, session_id: str, name: str, channel: RTCDataChannel) -> None:
        self.session_id = session_id
        self.name = name
        self.channel = channel
        self.subscribers: list[RTCDataChannel] = []
        channel.on("message", self._relay)

    def move_to(self, channel: RTCDataChannel) -> None:
        """Relay what arrives on `channel` from now on: the publisher's session moved to a
        new peer connection, where the same channel (negotiated, same id) was opened again."""
        self.channel = channel
        channel.on("message", self._relay)

    def resubscribe(self, old: RTCDataChannel, new: RTCDataChannel) -> None:
        """Relay to `new` in place of `old`: the subscriber's session moved (see move_to)."""
        if old in self.subscribers:
            self.subscribers[self.subscribers.index(old)] = new

    def _relay(self, message: str | bytes) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.readyState == "open":
                subscriber.send(message)
            elif subscriber.readyState == "closed":
                self.subscribers.remove(subscriber)

    def close(self) -> None:
        self.subscribers.clear()
        self.channel.close()
