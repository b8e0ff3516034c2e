"""Byte-exact Opus forwarding: one publication fans its RTP out to its subscriptions.

A packet from a publisher is re-headed for each subscriber (that subscriber's SSRC, payload
type, header-extension ids, and a sequence/timestamp offset that preserves the publisher's
gaps so loss stays visible to the receiver's FEC/PLC) and handed straight to the subscriber's
DTLS transport. The payload is never decoded. aiortc's own sender loop is parked on a track
that never yields, so it only sends RTCP; we keep its counters true so its sender reports are.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from dataclasses import dataclass
from enum import Enum

from aiortc import RTCRtpSender, clock
from aiortc.rtp import RtpPacket

from ..aiortc_compat import account_sent, send_rtp, take_stream_identity

__all__ = ["ExtensionIds", "Publication", "PublicationState", "Subscription"]

logger = logging.getLogger(__name__)

SAMPLES_PER_SECOND = 48_000
_HEADER = struct.Struct("!BBHII")
_ONE_BYTE_PROFILE = b"\xbe\xde"


@dataclass(frozen=True, slots=True)
class ExtensionIds:
    """One-byte header-extension ids the subscriber negotiated (0 = not negotiated)."""

    mid: int = 0
    audio_level: int = 0


def _extension_block(elements: bytes) -> bytes:
    """A one-byte-header RTP extension block (RFC 8285) holding `elements`, padded."""
    padding = -len(elements) % 4
    return (
        _ONE_BYTE_PROFILE
        + struct.pack("!H", (len(elements) + padding) // 4)
        + elements
        + b"\x00" * padding
    )


class PublicationState(Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class Publication:
    """A track a session publishes; identified by (publisher session id, track name)."""

    def __init__(self, session_id: str, track_name: str, mid: str) -> None:
        self.session_id = session_id
        self.track_name = track_name
        self.mid = mid
        self.state = PublicationState.ACTIVE
        self.created_at = time.monotonic()
        self.last_packet_at: float | None = None
        self.packets = 0
        self.bytes = 0
        self._subscriptions: list[Subscription] = []

    @property
    def is_active(self) -> bool:
        return self.state is PublicationState.ACTIVE

    @property
    def is_sending(self) -> bool:
        return self.state is PublicationState.ACTIVE and self.last_packet_at is not None

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    def idle_for(self, now: float) -> float:
        return now - (self.last_packet_at if self.last_packet_at is not None else self.created_at)

    def attach(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)

    def detach(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def close(self) -> None:
        """Stop forwarding; subscribers keep their m-lines but receive nothing more."""
        if self.state is PublicationState.INACTIVE:
            return
        self.state = PublicationState.INACTIVE
        for subscription in self._subscriptions:
            subscription.publication_closed()
        self._subscriptions.clear()
        logger.info(
            "publication closed session_id=%s track=%s packets=%d",
            self.session_id,
            self.track_name,
            self.packets,
        )

    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if self.state is not PublicationState.ACTIVE:
            return
        now = time.monotonic()
        self.last_packet_at = now
        self.packets += 1
        self.bytes += len(packet.payload)
        if not self._subscriptions:
            return
        # One clock reading per packet, shared by every subscriber (it is not cheap in aiortc).
        ntp = clock.current_ntp_time()
        for subscription in self._subscriptions:
            await subscription.forward(packet, now, ntp)


class Subscription:
    """One subscriber's copy of a publication, sent through the subscriber's RTP sender."""

    def __init__(self, publication: Publication, sender: RTCRtpSender, session_id: str) -> None:
        self.publication = publication
        self.session_id = session_id
        self._sender = sender
        self._ssrc = sender._ssrc
        self._payload_type: int | None = None
        self._extension_header = b""
        self._fixed_extension = b""
        self._level_id = 0
        self._source_ssrc: int | None = None
        self._seq_delta = 0
        self._ts_delta = 0
        self._last_seq = random.getrandbits(15)
        self._last_ts = random.getrandbits(32)
        self._last_sent_at: float | None = None
        self.forwarded = 0
        self.dropped = 0
        self.active = True

    @property
    def ready(self) -> bool:
        return self._payload_type is not None

    def configure(self, payload_type: int, extensions: ExtensionIds, mid: str | None) -> None:
        """Called once negotiation has fixed the subscriber's numbering."""
        self._payload_type = payload_type
        self._level_id = extensions.audio_level
        elements = b""
        if extensions.mid and mid:
            encoded = mid.encode()
            elements += bytes([(extensions.mid << 4) | (len(encoded) - 1)]) + encoded
        self._extension_header = elements
        self._fixed_extension = _extension_block(elements) if elements else b""

    def move_to(self, sender: RTCRtpSender) -> None:
        """Send through `sender` from now on: the subscriber's session moved to a new peer
        connection. `sender` takes over this stream's identity (SSRC, msid, report counters),
        so the subscriber's browser sees the same stream continue; call it before the answer
        that announces `sender` is created."""
        take_stream_identity(sender, self._sender)
        self._sender = sender

    def publication_closed(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.publication.detach(self)

    def _rebase(self, packet: RtpPacket) -> None:
        # First packet, or the publisher restarted its stream: continue our numbering from
        # where it stopped so the subscriber sees one continuous stream.
        next_seq = (self._last_seq + 1) & 0xFFFF
        elapsed = 0.02
        if self._last_sent_at is not None:
            elapsed = max(time.monotonic() - self._last_sent_at, 0.02)
        next_ts = (self._last_ts + int(elapsed * SAMPLES_PER_SECOND)) & 0xFFFFFFFF
        self._seq_delta = (next_seq - packet.sequence_number) & 0xFFFF
        self._ts_delta = (next_ts - packet.timestamp) & 0xFFFFFFFF
        self._source_ssrc = packet.ssrc

    def pack(self, packet: RtpPacket) -> bytes:
        if packet.ssrc != self._source_ssrc:
            self._rebase(packet)
        seq = (packet.sequence_number + self._seq_delta) & 0xFFFF
        ts = (packet.timestamp + self._ts_delta) & 0xFFFFFFFF
        self._last_seq = seq
        self._last_ts = ts
        second = (packet.marker << 7) | self._payload_type  # type: ignore[operator]
        level = packet.extensions.audio_level
        if self._level_id and level is not None:
            elements = self._extension_header + bytes(
                [self._level_id << 4, (0x80 if level[0] else 0) | level[1]]
            )
            extension = _extension_block(elements)
        else:
            extension = self._fixed_extension
        first = 0x90 if extension else 0x80
        return _HEADER.pack(first, second, seq, ts, self._ssrc) + extension + packet.payload

    async def forward(self, packet: RtpPacket, now: float, ntp: int) -> None:
        if not self.active or self._payload_type is None:
            self.dropped += 1
            return
        data = self.pack(packet)
        try:
            await send_rtp(self._sender, data)
        except ConnectionError:
            self.dropped += 1
            return
        self._last_sent_at = now
        self.forwarded += 1
        # Keep the parked sender's report figures true (RTCP SR is built from these).
        account_sent(self._sender, len(packet.payload), self._last_ts, ntp)
