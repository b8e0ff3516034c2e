"""Opus test signals: encode tones with discord.py's own libopus binding, decode what the fake
received, find the dominant frequency. libopus: the PyAV wheel's (docs/discord-voice.md §3)."""

from __future__ import annotations

import math
from pathlib import Path

import av
import discord.opus
import numpy as np

__all__ = ["decode_opus", "dominant_frequency", "encode_tone", "load_libopus"]

SAMPLE_RATE = 48_000
CHANNELS = 2
SAMPLES_PER_FRAME = 960


def load_libopus() -> None:
    """Load `av.libs/libopus*.so` into discord.opus once per process."""
    if discord.opus.is_loaded():
        return
    # The PyAV wheel keeps its bundled shared objects in av.libs/, next to the package.
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    candidates = sorted(libs.glob("libopus*.so*"))
    if not candidates:
        raise FileNotFoundError(f"no libopus in {libs}")
    discord.opus.load_opus(str(candidates[0]))


def encode_tone(frequency: float, frames: int, *, amplitude: float = 0.3) -> list[bytes]:
    """`frames` 20 ms Opus packets of a stereo sine wave (48 kHz), phase-continuous."""
    load_libopus()
    encoder = discord.opus.Encoder()
    packets = []
    for index in range(frames):
        t = (np.arange(SAMPLES_PER_FRAME) + index * SAMPLES_PER_FRAME) / SAMPLE_RATE
        mono = (amplitude * 32767 * np.sin(2 * math.pi * frequency * t)).astype("<i2")
        pcm = np.repeat(mono, CHANNELS).tobytes()
        packets.append(encoder.encode(pcm, SAMPLES_PER_FRAME))
    return packets


def decode_opus(packets: list[bytes]) -> np.ndarray:
    """Decode packets in order with one decoder; returns mono float samples in [-1, 1]."""
    load_libopus()
    decoder = discord.opus.Decoder()
    pcm = b"".join(decoder.decode(packet, fec=False) for packet in packets)
    stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, CHANNELS)
    return stereo.mean(axis=1) / 32768.0


def dominant_frequency(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Frequency of the strongest FFT bin (Hann window; resolution sample_rate / len)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(len(samples), 1 / sample_rate)[int(np.argmax(spectrum))])
