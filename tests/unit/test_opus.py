"""Opus codec through libopus: checked as audio (pitch, level, waveform), not as bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.audio import (
    FRAME_SAMPLES,
    OPUS_SILENCE_FRAME,
    SAMPLE_RATE_HZ,
    OpusDecoder,
    OpusEncoder,
    OpusError,
)
from media.audio.opus import LIBOPUS_ENV, find_libopus

AMPLITUDE = 0.3  # about -10.5 dBFS: loud speech, no clipping
WARMUP_FRAMES = 3  # the codec's first frames fade in from its initial state


def tone(hz: float, frames: int, *, start_frame: int = 0) -> npt.NDArray[np.int16]:
    n = np.arange(start_frame * FRAME_SAMPLES, (start_frame + frames) * FRAME_SAMPLES)
    return np.round(AMPLITUDE * 32767 * np.sin(2 * np.pi * hz * n / SAMPLE_RATE_HZ)).astype(
        np.int16
    )


def frames_of(pcm: npt.NDArray[np.int16], channels: int = 1) -> list[npt.NDArray[np.int16]]:
    step = FRAME_SAMPLES * channels
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def dominant_hz(pcm: npt.NDArray[np.int16]) -> float:
    # Zero-padding to one second gives 1 Hz bins even for a single 20 ms frame.
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)), n=SAMPLE_RATE_HZ))
    return float(np.argmax(spectrum))


def level_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    return float(20 * np.log10(max(rms, 1e-9) / 32768))


def correlation(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64) + 1e-9))


def best_lag_correlation(decoded: npt.NDArray[np.int16], original: npt.NDArray[np.int16]) -> float:
    """Codec delay is a few ms; find it and correlate the waveforms at that lag."""
    n = len(original) - FRAME_SAMPLES
    return max(correlation(decoded[lag : lag + n], original[:n]) for lag in range(0, 480, 4))


def round_trip(
    pcm: npt.NDArray[np.int16], encoder: OpusEncoder, channels: int = 1
) -> tuple[list[bytes], npt.NDArray[np.int16]]:
    decoder = OpusDecoder(channels)
    packets = [encoder.encode(frame) for frame in frames_of(pcm, channels)]
    return packets, np.concatenate([decoder.decode(p) for p in packets])


def test_mono_sine_round_trip_keeps_pitch_level_and_waveform() -> None:
    original = tone(440, 50)
    packets, decoded = round_trip(original, OpusEncoder())
    assert len(decoded) == len(original)
    body = decoded[WARMUP_FRAMES * FRAME_SAMPLES :]
    assert abs(dominant_hz(body) - 440) <= 5
    assert abs(level_dbfs(body) - level_dbfs(original)) <= 2.0
    assert best_lag_correlation(decoded, original) > 0.9
    # 32 kb/s is 80 bytes per 20 ms on average; VBR spends less on a pure tone.
    assert 20 <= np.mean([len(p) for p in packets]) <= 100


def test_stereo_keeps_channels_apart_and_accepts_both_layouts() -> None:
    left, right = tone(440, 25), tone(1000, 25)
    frames_2d = np.stack([left, right], axis=1)  # (samples, 2)
    interleaved = frames_2d.reshape(-1)
    packets_flat, decoded = round_trip(interleaved, OpusEncoder(2, bitrate_bps=64_000), 2)
    by_frame = OpusEncoder(2, bitrate_bps=64_000)
    packets_2d = [by_frame.encode(frames_2d[i : i + 960]) for i in range(0, len(left), 960)]
    assert packets_2d == packets_flat  # libopus is deterministic: same input, same bytes
    body = decoded.reshape(-1, 2)[WARMUP_FRAMES * FRAME_SAMPLES :]
    assert abs(dominant_hz(body[:, 0]) - 440) <= 5
    assert abs(dominant_hz(body[:, 1]) - 1000) <= 5
    for channel in (0, 1):
        assert abs(level_dbfs(body[:, channel]) - level_dbfs(left)) <= 2.0


def _tone_change_stream(fec: bool) -> list[bytes]:
    """440 Hz for 25 frames, then 880 Hz: concealment can only guess the old pitch."""
    pcm = np.concatenate([tone(440, 25), tone(880, 25, start_frame=25)])
    encoder = OpusEncoder(fec=fec, packet_loss_pct=20)
    return [encoder.encode(frame) for frame in frames_of(pcm)]


def test_fec_recovers_a_lost_frame_from_the_next_packet() -> None:
    packets = _tone_change_stream(fec=True)
    lost = 25  # the first 880 Hz frame
    reference = OpusDecoder()
    reference_pcm = [reference.decode(p) for p in packets]

    decoder, concealer = OpusDecoder(), OpusDecoder()
    for p in packets[:lost]:
        decoder.decode(p)
        concealer.decode(p)
    recovered = decoder.decode_fec(packets[lost + 1])
    concealed = concealer.decode_plc()

    assert recovered.shape == (FRAME_SAMPLES,)
    assert abs(dominant_hz(recovered) - 880) <= 20
    assert abs(level_dbfs(recovered) - level_dbfs(reference_pcm[lost])) <= 4.0
    fec_match = correlation(recovered, reference_pcm[lost])
    assert fec_match > 0.8
    # Genuinely FEC: concealment continues the old pitch and matches far worse.
    assert abs(dominant_hz(concealed) - 440) <= 20
    assert fec_match > correlation(concealed, reference_pcm[lost]) + 0.3
    # The stream carries on normally afterwards.
    after = decoder.decode(packets[lost + 1])
    assert correlation(after, reference_pcm[lost + 1]) > 0.8


def test_decode_fec_without_fec_in_the_packet_falls_back_to_concealment() -> None:
    packets = _tone_change_stream(fec=False)
    decoder, concealer = OpusDecoder(), OpusDecoder()
    for p in packets[:25]:
        decoder.decode(p)
        concealer.decode(p)
    fallback = decoder.decode_fec(packets[26])
    np.testing.assert_array_equal(fallback, concealer.decode_plc())
    assert abs(dominant_hz(fallback) - 440) <= 20
    assert level_dbfs(fallback) > level_dbfs(tone(440, 1)) - 10


def test_plc_continues_the_tone() -> None:
    decoder = OpusDecoder()
    encoder = OpusEncoder()
    for frame in frames_of(tone(440, 10)):
        decoder.decode(encoder.encode(frame))
    concealed = decoder.decode_plc()
    assert concealed.shape == (FRAME_SAMPLES,)
    assert abs(dominant_hz(concealed) - 440) <= 10
    assert level_dbfs(concealed) > level_dbfs(tone(440, 1)) - 10


def test_silence_frame_decodes_to_silence() -> None:
    decoded = OpusDecoder().decode(OPUS_SILENCE_FRAME)
    assert decoded.shape == (FRAME_SAMPLES,)
    assert np.abs(decoded).max() <= 1


@pytest.mark.parametrize("dtx", [True, False])
def test_dtx_stops_spending_bytes_on_silence(dtx: bool) -> None:
    encoder = OpusEncoder(dtx=dtx)
    sizes = [len(encoder.encode(np.zeros(FRAME_SAMPLES, np.int16))) for _ in range(30)]
    # libopus returns <= 2 bytes for a frame that need not be sent.
    if dtx:
        assert max(sizes[-10:]) <= 2
    else:
        assert min(sizes) > 2


def test_bitrate_setting_is_applied() -> None:
    rng = np.random.default_rng(3)
    speechlike = tone(300, 50) // 2 + rng.normal(0, 2000, 50 * FRAME_SAMPLES).astype(np.int16)
    means = {}
    for bitrate in (16_000, 64_000):
        encoder = OpusEncoder(bitrate_bps=bitrate)
        means[bitrate] = np.mean([len(encoder.encode(f)) for f in frames_of(speechlike)][10:])
        assert means[bitrate] == pytest.approx(bitrate / 8 * 0.020, rel=0.25)


def test_corrupt_packet_raises_opus_error_with_libopus_message() -> None:
    # TOC code 3 announcing zero frames is malformed.
    with pytest.raises(OpusError, match="corrupted stream") as caught:
        OpusDecoder().decode(b"\x03\x00")
    assert caught.value.code == -4


def test_rejects_bad_arguments() -> None:
    encoder = OpusEncoder()
    with pytest.raises(ValueError, match="int16"):
        encoder.encode(np.zeros(FRAME_SAMPLES, np.float32))
    with pytest.raises(ValueError, match="shape"):
        encoder.encode(np.zeros(FRAME_SAMPLES * 2, np.int16))
    with pytest.raises(ValueError, match="channels"):
        OpusDecoder(3)
    with pytest.raises(ValueError, match="application"):
        OpusEncoder(application="music")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        OpusDecoder().decode(b"")


def test_closed_codecs_refuse_work_and_close_is_idempotent() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    packet = encoder.encode(tone(440, 1))
    encoder.close()
    encoder.close()
    decoder.close()
    decoder.close()
    with pytest.raises(ValueError, match="closed"):
        encoder.encode(tone(440, 1))
    with pytest.raises(ValueError, match="closed"):
        decoder.decode(packet)


def test_libopus_comes_from_the_pyav_wheel_unless_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(LIBOPUS_ENV, raising=False)
    bundled = find_libopus()
    assert bundled.parent.name == "av.libs" and bundled.name.startswith("libopus")
    monkeypatch.setenv(LIBOPUS_ENV, str(bundled))
    assert find_libopus() == bundled
    missing = tmp_path / "libopus.so.0"
    monkeypatch.setenv(LIBOPUS_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        find_libopus()
