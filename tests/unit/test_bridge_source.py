"""What `BridgeSource` hands discord.py, decoded as Discord would: a lone room speaker's packets
pass through byte for byte, and the seams between passthrough and mixing keep a tone intact.

Real `InboundOpus` -> `Mixdown` (jitter buffers, libopus) -> `BridgeSource` (libopus encoder).
The streams are replayed on a virtual clock (arrival 20 ms apart, read 5 ms after), so the
playout itself is deterministic; tests/integration/test_voice_output.py runs the same paths in
real time through discord.py and the fake Discord.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from bot.voice.counters import VoiceCounters
from bot.voice.send import BridgeSource, SendMode
from media.audio import FRAME_SAMPLES, OpusDecoder, OpusEncoder
from media.audio.inbound import InboundOpus
from media.audio.mixdown import Mixdown, MixdownOutput
from tests.support import opus_source
from tests.support.signals import SAMPLE_RATE, band_level_db, tone

BASE = 600.0
OTHER = 900.0  # integer cycles per 20 ms frame for both: every frame is the same tone
FRAMES = 200
OTHER_FROM, OTHER_UNTIL = 60, 120
WINDOW = 240  # 5 ms


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MixdownOnClock:
    """The part of `Bridge` that `BridgeSource` reads, with reads stamped by the virtual clock."""

    def __init__(self, mixdown: Mixdown, clock: VirtualClock) -> None:
        self.mixdown = mixdown
        self.clock = clock
        self.read_at = 0.0

    def read_output(self, *, passthrough: bool = True) -> MixdownOutput:
        return self.mixdown.read_output(self.read_at, passthrough=passthrough)

    def wake_on_audio(self, callback: Callable[[], None] | None) -> None:
        self.mixdown.wake_on_packet(callback)


def aiortc_tone(frequency_hz: float, frames: int) -> list[bytes]:
    """Stereo CELT at 96 kb/s: what aiortc (and music-mode senders) send."""
    return opus_source.encode_tone(frequency_hz, frames)


def voip_tone(frequency_hz: float, frames: int) -> list[bytes]:
    """Mono `voip` at 32 kb/s (SILK/hybrid): what browsers and Discord clients send."""
    encoder = OpusEncoder(channels=1, bitrate_bps=32_000, application="voip")
    packets = [
        encoder.encode(tone(frequency_hz, FRAME_SAMPLES, i * FRAME_SAMPLES)) for i in range(frames)
    ]
    encoder.close()
    return packets


def play(
    base: Sequence[bytes], other: Sequence[bytes], mode: SendMode
) -> tuple[list[bytes], VoiceCounters, Mixdown]:
    """Base speaks all along, the other speaker from OTHER_FROM to OTHER_UNTIL; what was sent."""
    clock = VirtualClock()
    mixdown = Mixdown()
    base_in, other_in = InboundOpus("s", "base", clock), InboundOpus("s", "other", clock)
    mixdown.add("base", base_in)
    mixdown.add("other", other_in)
    bridge = MixdownOnClock(mixdown, clock)
    counters = VoiceCounters()
    source = BridgeSource(bridge, counters, mode=mode)
    sent = []
    for i in range(FRAMES):
        clock.now = 1000.0 + i * 0.020
        base_in.feed(base[i], i * FRAME_SAMPLES, i)
        if OTHER_FROM <= i < OTHER_UNTIL:
            other_in.feed(other[i], i * FRAME_SAMPLES, i)
        bridge.read_at = clock.now + 0.005
        sent.append(source.read())
    source.close()
    mixdown.close()
    return sent, counters, mixdown


def decode_as_discord(packets: Sequence[bytes]) -> np.ndarray:
    decoder = OpusDecoder(channels=2)
    pcm = np.concatenate([decoder.decode(p) for p in packets]).reshape(-1, 2).mean(axis=1)
    decoder.close()
    return pcm


def window_rms(pcm: np.ndarray) -> np.ndarray:
    usable = len(pcm) // WINDOW * WINDOW
    return np.sqrt((pcm[:usable].reshape(-1, WINDOW) ** 2).mean(axis=1))


def out_of_band_share(pcm: np.ndarray, bands: Sequence[float]) -> float:
    """Share of a 10 ms window's energy away from the tones (a click is broadband)."""
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / SAMPLE_RATE)
    near = np.zeros_like(freqs, dtype=bool)
    for hz in bands:
        near |= np.abs(freqs - hz) < 400  # 10 ms windows: 100 Hz bins, Hann main lobe 200 Hz
    return float(spectrum[~near].sum() / max(spectrum.sum(), 1e-9))


@pytest.mark.parametrize("encode", [aiortc_tone, voip_tone], ids=["celt-stereo", "voip-mono"])
def test_a_lone_speaker_goes_to_discord_byte_for_byte(encode):
    base = encode(BASE, FRAMES)
    sent, counters, mixdown = play(base, encode(OTHER, FRAMES), SendMode.PASSTHROUGH)

    alone = [i for i in range(5, FRAMES) if not OTHER_FROM - 5 <= i < OTHER_UNTIL + 5]
    # Each read sends the base stream's packet from the jitter buffer's constant delay ago.
    delay = max(range(4), key=lambda d: sum(sent[i] == base[i - d] for i in alone))
    assert [sent[i] for i in alone] == [base[i - delay] for i in alone]
    assert counters.frames_passed_through >= len(alone)
    assert mixdown.stats.passthrough_frames == counters.frames_passed_through


@pytest.mark.parametrize("encode", [aiortc_tone, voip_tone], ids=["celt-stereo", "voip-mono"])
def test_switching_between_passthrough_and_mixing_keeps_the_tone_intact(encode):
    base, other = encode(BASE, FRAMES), encode(OTHER, FRAMES)
    sent, counters, _ = play(base, other, SendMode.PASSTHROUGH)
    assert counters.frames_passed_through > 100 and counters.frames_encoded > 40
    reference, _, _ = play(base, other, SendMode.MIX)
    assert not set(reference) & set(base)  # the baseline always encodes

    pcm = decode_as_discord(sent)
    steady = window_rms(decode_as_discord(reference))[40:]  # the baseline's level, same input
    rms = window_rms(pcm)[40:]
    # Level: no 5 ms window anywhere (seams included) falls 6 dB below the baseline's quietest.
    assert rms.min() > steady.min() / 2, f"dip to {rms.min():.0f} (baseline {steady.min():.0f})"
    # No click: every 10 ms window is the tones and little else.
    shares = [
        out_of_band_share(pcm[s : s + 480], (BASE, OTHER))
        for s in range(480 * 10, len(pcm) - 480, 480)
    ]
    assert max(shares) < 0.02, (
        f"broadband energy {max(shares):.3f} at window {int(np.argmax(shares))}"
    )
    # Frequencies: the other speaker is heard while it speaks and not otherwise.
    frame = FRAME_SAMPLES
    mixed = pcm[(OTHER_FROM + 10) * frame : (OTHER_UNTIL - 5) * frame]
    after = pcm[(OTHER_UNTIL + 10) * frame : (FRAMES - 5) * frame]
    assert band_level_db(mixed, OTHER) > band_level_db(mixed, BASE) - 6
    assert band_level_db(after, OTHER) < band_level_db(after, BASE) - 30
    assert band_level_db(after, BASE) > -26  # the 0.3 full-scale tone: -22.5 dB by this measure
