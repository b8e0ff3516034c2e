"""Sums 20 ms int16 PCM frames, with a soft limiter so loud sums never wrap or hard-clip.

Sums are taken in int32 (exact for any number of int16 inputs we will ever mix). Samples
at or below `LIMITER_KNEE_DBFS` pass untouched; above it a tanh curve bends the excess
towards full scale, which it approaches but never reaches. The curve is stateless, so each
frame stands alone and one mixer can serve many outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .packet import FRAME_SAMPLES

logger = logging.getLogger(__name__)

LIMITER_KNEE_DBFS = -3.0

_FULL_SCALE = 32767.0
_KNEE = _FULL_SCALE * 10 ** (LIMITER_KNEE_DBFS / 20)
_KNEE_RANGE = _FULL_SCALE - _KNEE

Pcm = npt.NDArray[np.int16]


class Mixer:
    """Mixes frames of `FRAME_SAMPLES * channels` interleaved int16 samples.

    Keeps scratch buffers between calls, so one mixer belongs to one task/thread. Returned
    arrays are fresh (callers may keep them), except the shared read-only silence frame.
    """

    def __init__(self, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.samples = FRAME_SAMPLES * channels
        self._silence = np.zeros(self.samples, dtype=np.int16)
        self._silence.flags.writeable = False
        self._total = np.empty(self.samples, dtype=np.int32)
        self._sums = np.empty((0, self.samples), dtype=np.int32)

    def mix(self, frames: Sequence[Pcm]) -> Pcm:
        """The limited sum of `frames`; silence (read-only) for none, the input itself for one."""
        if not frames:
            return self._silence
        if len(frames) == 1:
            frame = frames[0]
            if frame.dtype != np.int16 or frame.shape != (self.samples,):
                raise ValueError(
                    f"expected int16 frames of shape ({self.samples},), "
                    f"got {frame.dtype} {frame.shape}"
                )
            return frame
        inputs = self._stack(frames)
        np.add.reduce(inputs, axis=0, dtype=np.int32, out=self._total)
        return _limit(self._total)

    def mix_minus[K: Hashable](self, frames: Mapping[K, Pcm]) -> dict[K, Pcm]:
        """For each key, the limited mix of every *other* frame (what that participant hears).

        Computed as total minus own: one sum and one subtraction for all outputs.
        """
        if len(frames) <= 1:
            return {key: self._silence for key in frames}
        inputs = self._stack(list(frames.values()))
        np.add.reduce(inputs, axis=0, dtype=np.int32, out=self._total)
        if len(inputs) > len(self._sums):
            self._sums = np.empty((len(inputs), self.samples), dtype=np.int32)
        sums = self._sums[: len(inputs)]
        np.subtract(self._total, inputs, out=sums)
        return dict(zip(frames.keys(), _limit(sums), strict=True))

    def _stack(self, frames: Sequence[Pcm]) -> npt.NDArray[np.int16]:
        # One np.array call both copies and validates: mixed dtypes would promote and mixed
        # shapes would not stack, so checking the result covers every input (and beats
        # np.stack into a preallocated buffer, which loops in Python).
        try:
            inputs = np.array(frames)
        except ValueError as exc:
            raise ValueError(f"expected int16 frames of shape ({self.samples},): {exc}") from exc
        if inputs.dtype != np.int16 or inputs.shape != (len(frames), self.samples):
            raise ValueError(
                f"expected int16 frames of shape ({self.samples},), "
                f"got {inputs.dtype} frames stacking to {inputs.shape}"
            )
        return inputs


def _limit(sums: npt.NDArray[np.int32]) -> Pcm:
    """int16 PCM from int32 sums: identity up to the knee, a tanh curve above it."""
    if max(int(sums.max()), -int(sums.min())) <= _KNEE:
        return sums.astype(np.int16)
    # Whole-array math: bending only the samples past the knee (fancy indexing) measured
    # slower unless very few samples are loud.
    x = sums.astype(np.float32)
    excess = np.abs(x)
    excess -= _KNEE
    np.maximum(excess, 0.0, out=excess)
    excess *= 1.0 / _KNEE_RANGE
    np.tanh(excess, out=excess)
    excess *= _KNEE_RANGE
    np.copysign(excess, x, out=excess)
    np.clip(x, -_KNEE, _KNEE, out=x)
    x += excess
    # At most knee + range = 32767.0 exactly (tanh saturates at 1.0), so the cast can't wrap.
    np.rint(x, out=x)
    return x.astype(np.int16)
