"""Mixer: sums checked by spectrum and waveform, limiter checked for wrap and hard clipping."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from media.audio import FRAME_SAMPLES, SAMPLE_RATE_HZ, Mixer

FULL_SCALE = 32767
KNEE = FULL_SCALE * 10 ** (-3 / 20)


def tone(hz: float, amplitude: float, samples: int = FRAME_SAMPLES) -> npt.NDArray[np.int16]:
    n = np.arange(samples)
    wave = amplitude * FULL_SCALE * np.sin(2 * np.pi * hz * n / SAMPLE_RATE_HZ)
    return np.round(wave).astype(np.int16)


def magnitude_at(pcm: npt.NDArray[np.int16], hz: float) -> float:
    """Spectral magnitude near `hz` (1 Hz bins via zero-padding), normalised to amplitude."""
    window = np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(pcm * window, n=SAMPLE_RATE_HZ)) * 2 / window.sum()
    return float(spectrum[int(hz) - 5 : int(hz) + 6].max() / FULL_SCALE)


def correlation(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def test_two_tones_mix_to_both_frequencies_exactly_when_quiet() -> None:
    a, b = tone(440, 0.25), tone(1000, 0.25)
    mixed = Mixer().mix([a, b])
    assert mixed.dtype == np.int16 and mixed.shape == (FRAME_SAMPLES,)
    assert magnitude_at(mixed, 440) == pytest.approx(0.25, rel=0.1)
    assert magnitude_at(mixed, 1000) == pytest.approx(0.25, rel=0.1)
    assert magnitude_at(mixed, 700) < 0.02
    # Below the knee the limiter is not involved: the mix is the plain sum.
    np.testing.assert_array_equal(mixed, a.astype(np.int32) + b)


def test_loud_sum_never_wraps_or_hard_clips() -> None:
    a = tone(440, 1.0)
    b = tone(440, 1.0)
    true_sum = a.astype(np.int32) + b  # peaks at twice full scale
    mixed = Mixer().mix([a, b])
    assert np.abs(mixed.astype(np.int32)).max() <= FULL_SCALE
    # No wrap-around: every clearly non-zero sample keeps its sign.
    loud = np.abs(true_sum) > 100
    assert np.array_equal(np.sign(mixed[loud]), np.sign(true_sum[loud]))
    assert correlation(mixed, true_sum) > 0.95
    # No hard clipping: the peaks stay rounded instead of flattening at full scale.
    assert np.count_nonzero(np.abs(mixed.astype(np.int32)) >= FULL_SCALE - 1) == 0
    # Soft knee: untouched below it, and louder input never comes out quieter.
    quiet = np.abs(true_sum) <= KNEE - 1
    np.testing.assert_array_equal(mixed[quiet], true_sum[quiet])
    order = np.argsort(true_sum, kind="stable")
    assert np.all(np.diff(mixed[order].astype(np.int32)) >= 0)


@pytest.mark.parametrize("extreme", [32767, -32768])
def test_thirty_extreme_streams_saturate_softly_with_the_right_sign(extreme: int) -> None:
    frames = [np.full(FRAME_SAMPLES, extreme, np.int16) for _ in range(30)]
    mixed = Mixer().mix(frames)
    assert np.all(np.sign(mixed) == np.sign(extreme))
    assert np.all(np.abs(mixed.astype(np.int32)) <= FULL_SCALE)
    assert np.all(np.abs(mixed.astype(np.int32)) > KNEE)


def test_no_input_is_silence_and_one_input_is_returned_untouched() -> None:
    mixer = Mixer()
    silence = mixer.mix([])
    assert silence.shape == (FRAME_SAMPLES,) and not silence.any()
    only = tone(440, 0.9)
    assert mixer.mix([only]) is only


def test_mix_minus_gives_each_participant_everyone_but_themselves() -> None:
    frames = {"a": tone(440, 0.2), "b": tone(1000, 0.2), "c": tone(1800, 0.2)}
    out = Mixer().mix_minus(frames)
    assert set(out) == {"a", "b", "c"}
    heard_by_a = out["a"]
    assert magnitude_at(heard_by_a, 1000) == pytest.approx(0.2, rel=0.1)
    assert magnitude_at(heard_by_a, 1800) == pytest.approx(0.2, rel=0.1)
    assert magnitude_at(heard_by_a, 440) < 0.002
    np.testing.assert_array_equal(heard_by_a, frames["b"].astype(np.int32) + frames["c"])
    np.testing.assert_array_equal(out["c"], frames["a"].astype(np.int32) + frames["b"])


def test_loud_mix_minus_matches_mixing_the_others_directly() -> None:
    rng = np.random.default_rng(5)
    frames = {k: rng.integers(-20000, 20000, FRAME_SAMPLES).astype(np.int16) for k in range(8)}
    mixer = Mixer()
    out = mixer.mix_minus(frames)
    for key, heard in out.items():
        others = [frame for other, frame in frames.items() if other != key]
        np.testing.assert_array_equal(heard, mixer.mix(others))
        assert np.abs(heard.astype(np.int32)).max() <= FULL_SCALE


def test_mix_minus_of_one_is_silence_and_of_none_is_empty() -> None:
    mixer = Mixer()
    assert mixer.mix_minus({}) == {}
    alone = mixer.mix_minus({"a": tone(440, 0.5)})
    assert list(alone) == ["a"] and not alone["a"].any()


def test_results_are_independent_of_later_calls_and_inputs_untouched() -> None:
    mixer = Mixer()
    a, b, c = tone(440, 0.2), tone(1000, 0.2), tone(1800, 0.2)
    a_before = a.copy()
    first = mixer.mix([a, b])
    first_copy = first.copy()
    heard = mixer.mix_minus({"a": a, "b": b, "c": c})
    mixer.mix([b, c])
    mixer.mix_minus({"x": c, "y": a})
    np.testing.assert_array_equal(first, first_copy)
    np.testing.assert_array_equal(heard["a"], b.astype(np.int32) + c)
    np.testing.assert_array_equal(a, a_before)


def test_stereo_frames_mix_per_sample() -> None:
    left = tone(440, 0.2, 2 * FRAME_SAMPLES)
    right = tone(1000, 0.2, 2 * FRAME_SAMPLES)
    mixed = Mixer(channels=2).mix([left, right])
    np.testing.assert_array_equal(mixed, left.astype(np.int32) + right)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(FRAME_SAMPLES, np.float32),
        np.zeros(FRAME_SAMPLES, np.int32),
        np.zeros(FRAME_SAMPLES - 1, np.int16),
        np.zeros((FRAME_SAMPLES, 1), np.int16),
    ],
)
def test_rejects_frames_that_are_not_one_frame_of_int16(bad: Any) -> None:
    mixer = Mixer()
    good = tone(440, 0.2)
    with pytest.raises(ValueError, match="int16"):
        mixer.mix([good, bad])
    with pytest.raises(ValueError, match="int16"):
        mixer.mix([bad])
    with pytest.raises(ValueError, match="int16"):
        mixer.mix_minus({"good": good, "bad": bad})
