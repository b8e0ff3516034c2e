"""SDP shaping that browsers and strict SFUs require of aiortc (docs/webrtc-interop.md §2).

aiortc generates every offer from scratch with its own payload types and header-extension
ids, answers with live ports and every mid in BUNDLE, and advertises opus without fmtp. A
browser (or Cloudflare) rejects re-offers that renumber what was negotiated and answers that
accept what the offer rejected. These functions take aiortc's SDP and make it say what the
connection has already agreed, before it is applied locally and sent to the other side. Both
the local SFU and the media peer use them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters

__all__ = [
    "OPUS_FMTP",
    "NegotiatedMap",
    "rejected_mids",
    "set_local_description",
    "shape_answer",
    "shape_offer",
]

OPUS_FMTP = {"minptime": 10, "useinbandfec": 1}


@dataclass(slots=True)
class NegotiatedMap:
    """The payload type of opus and the header-extension ids the client has agreed to."""

    opus_payload_type: int | None = None
    extension_ids: dict[str, int] = field(default_factory=dict)

    def learn(self, description: aiortc_sdp.SessionDescription) -> None:
        """Adopt the client's numbering; the first value seen for a URI stays (BUNDLE)."""
        for media in description.media:
            if media.kind != "audio":
                continue
            for codec in media.rtp.codecs:
                if codec.mimeType.lower() == "audio/opus" and self.opus_payload_type is None:
                    self.opus_payload_type = codec.payloadType
            for ext in media.rtp.headerExtensions:
                self.extension_ids.setdefault(ext.uri, ext.id)


def rejected_mids(description: aiortc_sdp.SessionDescription) -> set[str]:
    return {m.rtp.muxId for m in description.media if m.port == 0}


def _bundle(description: aiortc_sdp.SessionDescription) -> aiortc_sdp.GroupDescription | None:
    return next((g for g in description.group if g.semantic == "BUNDLE"), None)


def _reject(media: aiortc_sdp.MediaDescription) -> None:
    media.port = 0
    media.direction = "inactive"
    media.ice_candidates = []
    media.ice_candidates_complete = False


def _opus_only(media: aiortc_sdp.MediaDescription, payload_type: int | None) -> None:
    opus: RTCRtpCodecParameters | None = next(
        (c for c in media.rtp.codecs if c.mimeType.lower() == "audio/opus"), None
    )
    if opus is None:
        return
    if payload_type is not None:
        opus.payloadType = payload_type
    opus.parameters = {**opus.parameters, **OPUS_FMTP}
    media.rtp.codecs = [opus]
    media.fmt = [opus.payloadType]


def _renumber_extensions(media: aiortc_sdp.MediaDescription, ids: dict[str, int]) -> None:
    if not ids:
        return
    media.rtp.headerExtensions = [
        RTCRtpHeaderExtensionParameters(id=ids[ext.uri], uri=ext.uri)
        for ext in media.rtp.headerExtensions
        if ext.uri in ids
    ]


def shape_offer(
    description: aiortc_sdp.SessionDescription,
    negotiated: NegotiatedMap,
    closed_mids: Collection[str],
) -> None:
    """Make an aiortc offer keep the client's numbering and keep closed m-lines closed."""
    for media in description.media:
        if media.kind != "audio":
            continue
        _opus_only(media, negotiated.opus_payload_type)
        _renumber_extensions(media, negotiated.extension_ids)
        if media.rtp.muxId in closed_mids:
            _reject(media)
    bundle = _bundle(description)
    if bundle is not None:
        bundle.items = [mid for mid in bundle.items if mid not in closed_mids]


def shape_answer(
    description: aiortc_sdp.SessionDescription,
    offer: aiortc_sdp.SessionDescription,
    closed_mids: Collection[str],
) -> None:
    """Reject in the answer what the offer rejected; BUNDLE equals the offer's minus those."""
    rejected = rejected_mids(offer) | set(closed_mids)
    for media in description.media:
        if media.kind == "audio":
            _opus_only(media, None)
        if media.rtp.muxId in rejected:
            _reject(media)
    bundle = _bundle(description)
    offered = _bundle(offer)
    if bundle is not None:
        source = offered.items if offered is not None else bundle.items
        bundle.items = [mid for mid in source if mid not in rejected]


async def set_local_description(
    pc: RTCPeerConnection,
    kind: Literal["offer", "answer"],
    shape: Callable[[aiortc_sdp.SessionDescription], None],
) -> str:
    """Create an offer or answer, shape it, apply it, and return the SDP to send.

    aiortc rewrites ports and candidates when it applies a description, so what is sent is
    the applied description shaped once more (shaping is idempotent).
    """
    created = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
    description = aiortc_sdp.SessionDescription.parse(created.sdp)
    description.type = kind
    shape(description)
    await pc.setLocalDescription(RTCSessionDescription(sdp=str(description), type=kind))
    applied = aiortc_sdp.SessionDescription.parse(pc.localDescription.sdp)
    applied.type = kind
    shape(applied)
    return str(applied)
