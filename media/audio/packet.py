"""One received Opus packet, and the frame constants every audio module shares."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE_HZ = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
"""Samples per channel in one frame; also the RTP timestamp step (Opus RTP runs at 48 kHz)."""

OPUS_SILENCE_FRAME = b"\xf8\xff\xfe"
"""The 20 ms Opus silence frame Discord sends (and passes through DAVE unencrypted)."""

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
