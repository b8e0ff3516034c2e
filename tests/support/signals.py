"""Known test signals and how to recognise them in what arrived."""

from __future__ import annotations

import fractions
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError
from aiortc.rtp import RtpPacket
from av import AudioFrame

from media.audio import OpusDecoder

SAMPLE_RATE = 48_000
FRAME_SAMPLES = int(SAMPLE_RATE * AUDIO_PTIME)


def tone(frequency_hz: float, samples: int, start: int = 0, amplitude: float = 0.3) -> np.ndarray:
    t = (np.arange(samples) + start) / SAMPLE_RATE
    return (np.sin(2 * np.pi * frequency_hz * t) * amplitude * 32767).astype(np.int16)


def dominant_frequency(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    x = pcm.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[int(np.argmax(spectrum))])


def band_level_db(pcm: np.ndarray, frequency_hz: float, width_hz: float = 15.0) -> float:
    """Energy near `frequency_hz` relative to full scale, in dB (for presence checks)."""
    x = pcm.astype(np.float64) / 32768
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    band = spectrum[(freqs > frequency_hz - width_hz) & (freqs < frequency_hz + width_hz)]
    return float(20 * np.log10(max(band.max(initial=0.0), 1e-12)))


def longest_gap_s(arrivals: Sequence[float]) -> float:
    """The longest time between two consecutive packet arrivals (0 for fewer than two)."""
    return max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)


def pause_beyond(arrivals: Sequence[float], reference: Sequence[float]) -> float:
    """The longest pause between `arrivals` that a `reference` stream received alongside did
    not share: a stall of the receiving process pauses both, a fault of one stream only it.

    For each pause, subtract the reference's longest pause within the same interval (its
    arrivals clipped to it); the result is the pause of the stream's own making.
    """
    worst = 0.0
    for start, end in itertools.pairwise(arrivals):
        inside = [start, *(t for t in reference if start < t < end), end]
        worst = max(worst, (end - start) - longest_gap_s(inside))
    return worst


def longest_media_gap_s(packets: Sequence[RtpPacket], clock_hz: int = SAMPLE_RATE) -> float:
    """The longest stretch of audio missing between two consecutive packets of one stream,
    from their RTP timestamps: what a listener cannot hear, however late packets arrived."""
    steps = (((b.timestamp - a.timestamp) & 0xFFFFFFFF) for a, b in itertools.pairwise(packets))
    return max((step / clock_hz - AUDIO_PTIME for step in steps), default=0.0)


def decode_opus(payloads: Iterable[bytes]) -> np.ndarray:
    """Mono PCM of Opus payloads decoded in order (tapped RTP, which no receiver decoded)."""
    decoder = OpusDecoder()
    try:
        return np.concatenate([decoder.decode(p) for p in payloads])
    finally:
        decoder.close()


def rms_dbfs(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64) / 32768
    return float(20 * np.log10(max(np.sqrt(np.mean(x * x)), 1e-12)))


class ToneTrack(MediaStreamTrack):
    """A real-time paced mono tone, encoded by aiortc like any microphone track."""

    kind = "audio"

    def __init__(self, frequency_hz: float, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency_hz = frequency_hz
        self.amplitude = amplitude
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        import asyncio
        import time

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._sent / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = tone(self.frequency_hz, FRAME_SAMPLES, self._sent, self.amplitude)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME_SAMPLES
        return frame


async def collect_pcm(track: MediaStreamTrack, seconds: float) -> np.ndarray:
    """Decoded mono PCM from an aiortc remote track (stock receiver) for `seconds`."""
    chunks = []
    got = 0
    while got < seconds * SAMPLE_RATE:
        frame = await track.recv()
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        mono = data.reshape(-1, channels)[:, 0] if channels > 1 else data.reshape(-1)
        chunks.append(mono)
        got += len(mono)
    return np.concatenate(chunks)
