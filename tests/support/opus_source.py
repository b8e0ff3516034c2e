"""Pre-encoded Opus, replayed in real time: cheap senders for load and byte-exact checks."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Sequence

import av
from aiortc import MediaStreamTrack
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError

from .signals import FRAME_SAMPLES, SAMPLE_RATE, tone

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def encode_tone(frequency_hz: float, frames: int) -> list[bytes]:
    """Opus packets (20 ms each) of a tone, encoded once up front."""
    encoder = OpusEncoder()
    packets: list[bytes] = []
    for index in range(frames):
        pcm = tone(frequency_hz, FRAME_SAMPLES, index * FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * FRAME_SAMPLES
        frame.time_base = TIME_BASE
        payloads, _ = encoder.encode(frame)
        packets.extend(payloads)
    return packets


class OpusReplayTrack(MediaStreamTrack):
    """Sends `packets` in a loop, paced at 20 ms; aiortc packs them without re-encoding."""

    kind = "audio"

    def __init__(self, packets: Sequence[bytes]) -> None:
        super().__init__()
        self._packets = packets
        self._index = 0
        self._start: float | None = None
        self.sent: list[bytes] = []

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._index * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        payload = self._packets[self._index % len(self._packets)]
        packet = av.Packet(payload)
        packet.pts = self._index * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        self._index += 1
        if len(self.sent) < 1000:
            self.sent.append(payload)
        return packet
