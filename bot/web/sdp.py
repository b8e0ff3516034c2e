"""`SdpSummary`: what a browser's session description asks for, checked before it is relayed.

The service relays browser SDP to Realtime with its own secret, so it decides what may pass:
audio m-lines only (no video, no data channels), a bounded size, the expected type. The
parse is deliberately shallow (m-lines, mids, directions); Realtime validates the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from media.realtime import SessionDescription

from .errors import WebError

__all__ = ["MAX_SDP_CHARS", "MediaSection", "SdpSummary"]

MAX_SDP_CHARS = 64 * 1024
MAX_MEDIA_SECTIONS = 128
SENDING = ("sendonly", "sendrecv")


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str
    port: int
    mid: str | None
    direction: str

    @property
    def rejected(self) -> bool:
        return self.port == 0


@dataclass(frozen=True, slots=True)
class SdpSummary:
    description: SessionDescription
    media: tuple[MediaSection, ...]

    @classmethod
    def parse(cls, value: Any, expected: Literal["offer", "answer"]) -> SdpSummary:
        """Check `{"type", "sdp"}` from a request body: raises WebError (400 bad_sdp, 406
        audio_only) or returns the summary."""
        if not isinstance(value, Mapping):
            raise WebError(400, "bad_sdp", "sessionDescription must be an object {type, sdp}")
        kind, sdp = value.get("type"), value.get("sdp")
        if kind != expected:
            raise WebError(400, "bad_sdp", f"sessionDescription.type must be {expected!r}")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise WebError(400, "bad_sdp", "sessionDescription.sdp is not an SDP")
        if len(sdp) > MAX_SDP_CHARS:
            raise WebError(
                400, "bad_sdp", f"sessionDescription.sdp is over {MAX_SDP_CHARS} characters"
            )
        media = _media_sections(sdp)
        if not media:
            raise WebError(400, "bad_sdp", "the SDP has no media section")
        if len(media) > MAX_MEDIA_SECTIONS:
            raise WebError(400, "bad_sdp", f"the SDP has over {MAX_MEDIA_SECTIONS} media sections")
        others = sorted({m.kind for m in media if m.kind != "audio"})
        if others:
            raise WebError(406, "audio_only", f"audio only: {', '.join(others)} is not accepted")
        return cls(SessionDescription(expected, sdp), tuple(media))

    def section(self, mid: str) -> MediaSection | None:
        return next((m for m in self.media if m.mid == mid), None)

    def sending_audio(self, mid: str) -> bool:
        section = self.section(mid)
        return section is not None and not section.rejected and section.direction in SENDING


def _media_sections(sdp: str) -> list[MediaSection]:
    sections: list[dict[str, Any]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 3:
                raise WebError(400, "bad_sdp", "a malformed m= line")
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                raise WebError(400, "bad_sdp", "a malformed m= line") from None
            sections.append({"kind": parts[0], "port": port, "mid": None, "direction": "sendrecv"})
        elif sections and line.startswith("a=mid:"):
            sections[-1]["mid"] = line[len("a=mid:") :]
        elif (
            sections
            and line[2:] in ("sendonly", "recvonly", "sendrecv", "inactive")
            and line.startswith("a=")
        ):
            sections[-1]["direction"] = line[2:]
    return [MediaSection(**section) for section in sections]
