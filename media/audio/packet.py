"""One received Opus packet, and the frame constants every audio module shares."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE_HZ = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
"""Samples per channel in one frame; also the RTP timestamp step (Opus RTP runs at 48 kHz)."""

OPUS_SILENCE_FRAME = b"\xf8\xff\xfe"
"""The 20 ms Opus silence frame Discord sends (and passes through DAVE unencrypted)."""

_FRAME_SAMPLES_BY_CONFIG = (
    (480, 960, 1920, 2880) * 3  # SILK: 10, 20, 40, 60 ms
    + (480, 960) * 2  # hybrid: 10, 20 ms
    + (120, 240, 480, 960) * 4  # CELT: 2.5, 5, 10, 20 ms
)
"""Samples (48 kHz) per Opus frame, by the TOC byte's configuration number (RFC 6716 §3.1)."""


def opus_packet_samples(payload: bytes) -> int:
    """Samples (48 kHz, per channel) one Opus packet decodes to; 0 if it is malformed."""
    if not payload:
        return 0
    toc = payload[0]
    code = toc & 0x3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(payload) < 2:
        return 0
    else:
        frames = payload[1] & 0x3F
    return frames * _FRAME_SAMPLES_BY_CONFIG[toc >> 3]


def opus_packet_is_celt(payload: bytes) -> bool:
    """The packet is coded in CELT-only mode (RFC 6716 §3.1: configurations 16-31)."""
    return bool(payload) and payload[0] >> 3 >= 16


_UINT32_MAX = 0xFFFF_FFFF
_UINT16_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class OpusPacket:
    """An Opus packet as taken off the wire, with the RTP fields playout needs."""

    payload: bytes
    timestamp: int
    """RTP timestamp (48 kHz units, uint32, wraps)."""
    sequence: int
    """RTP sequence number (uint16, wraps)."""
    arrival: float
    """`time.monotonic()` seconds when the packet arrived."""

    def __post_init__(self) -> None:
        # Extended (unwrapped) counters passed by mistake would silently break wrap-around
        # arithmetic downstream; refuse them here where the caller can see why.
        if not 0 <= self.timestamp <= _UINT32_MAX:
            raise ValueError(f"RTP timestamp {self.timestamp} is not a uint32")
        if not 0 <= self.sequence <= _UINT16_MAX:
            raise ValueError(f"RTP sequence number {self.sequence} is not a uint16")
