"""Pure audio: Opus codec, jitter buffer and mixer. No sockets, no event loop, no discord."""

from .jitter import (
    JITTER_MAX_MS,
    JITTER_MIN_MS,
    FrameKind,
    JitterBuffer,
    JitterStats,
    PlayoutFrame,
)
from .mixer import Mixer
from .opus import OpusDecoder, OpusEncoder, OpusError
from .packet import FRAME_MS, FRAME_SAMPLES, OPUS_SILENCE_FRAME, SAMPLE_RATE_HZ, OpusPacket

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "JITTER_MAX_MS",
    "JITTER_MIN_MS",
    "OPUS_SILENCE_FRAME",
    "SAMPLE_RATE_HZ",
    "FrameKind",
    "JitterBuffer",
    "JitterStats",
    "Mixer",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
    "OpusPacket",
    "PlayoutFrame",
]
