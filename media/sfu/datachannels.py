"""DataChannel relay: a session publishes a named channel; subscribers get their own copy.

Channels are negotiated (`negotiated: true`) with ids the SFU allocates per session, as on
Cloudflare; messages a publisher sends are relayed to every subscriber's channel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiortc import RTCDataChannel

from .errors import ItemError

__all__ = ["ChannelPublication", "ChannelResult", "ChannelStatus"]

logger = logging.getLogger(__name__)


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
