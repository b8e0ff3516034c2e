"""Validation of client SDP before it may touch one of the SFU's peer connections.

aiortc raises assorted exceptions on hostile SDP and can be left half-applied; everything a
client sends is parsed and checked here first, and refused with 406
`invalid_session_description` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from .errors import ApiError

__all__ = ["ClientSdp", "parse"]

MAX_SDP_BYTES = 512 * 1024
MAX_MEDIA_SECTIONS = 1024


@dataclass(frozen=True, slots=True)
class ClientSdp:
    description: aiortc_sdp.SessionDescription
    text: str
    """What to hand to aiortc: the client's text, or a normalized one when defaults applied."""


def parse(text: str, expected_type: str) -> ClientSdp:
    """Parse and sanity-check client SDP before it can touch a peer connection."""
    if len(text) > MAX_SDP_BYTES:
        raise ApiError.invalid_sdp(f"session description is larger than {MAX_SDP_BYTES} bytes")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises many types on hostile input
        raise ApiError.invalid_sdp(f"session description does not parse: {exc!r}") from None
    description.type = expected_type
    if not description.media:
        raise ApiError.invalid_sdp("session description has no media sections")
    if len(description.media) > MAX_MEDIA_SECTIONS:
        raise ApiError.invalid_sdp(f"more than {MAX_MEDIA_SECTIONS} media sections")
    mids: set[str] = set()
    for index, media in enumerate(description.media):
        where = f"m-line {index}"
        if media.kind not in ("audio", "application"):
            raise ApiError.invalid_sdp(f"{where}: the local SFU carries audio and data only")
        mid = media.rtp.muxId
        if not mid or mid in mids:
            raise ApiError.invalid_sdp(f"{where}: missing or duplicate a=mid")
        mids.add(mid)
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise ApiError.invalid_sdp(f"{where}: missing a=ice-ufrag or a=ice-pwd")
        if media.dtls is None or not media.dtls.fingerprints:
            raise ApiError.invalid_sdp(f"{where}: missing a=fingerprint")
        if media.kind == "audio":
            if not media.rtcp_mux:
                raise ApiError.invalid_sdp(f"{where}: a=rtcp-mux is required")
            if media.port != 0 and not any(
                c.mimeType.lower() == "audio/opus" for c in media.rtp.codecs
            ):
                raise ApiError.invalid_sdp(f"{where}: opus is required")
        if (
            expected_type == "answer"
            and media.port != 0
            and media.dtls.role
            not in (
                "client",
                "server",
            )
        ):
            raise ApiError.invalid_sdp(f"{where}: answer must set a=setup:active or passive")
    bundle = next((g for g in description.group if g.semantic == "BUNDLE"), None)
    if bundle is not None:
        unknown = [str(mid) for mid in bundle.items if str(mid) not in mids]
        if unknown:
            raise ApiError.invalid_sdp(
                f"a=group:BUNDLE names mids with no m-line: {', '.join(unknown)}"
            )
    defaulted = False
    for media in description.media:
        if media.kind == "audio" and media.direction is None:
            media.direction = "sendrecv"  # RFC 4566 §6: the default when none is given
            defaulted = True
    # aiortc reads the text itself and cannot answer a section without a direction.
    return ClientSdp(description, str(description) if defaulted else text)
