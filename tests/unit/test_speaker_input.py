"""A speaker pushing without timestamps gets strictly advancing, wall-clock ones."""

from __future__ import annotations

import pytest

from media.bridge import SpeakerInput


def stamps(times: list[float]) -> list[int]:
    speaker = SpeakerInput.__new__(SpeakerInput)
    speaker._origin = None
    speaker._last_timestamp = 0
    out = []
    for t in times:
        stamp = speaker._wall_clock_timestamp(100 + t)
        speaker._last_timestamp = stamp
        out.append(stamp)
    return out


@pytest.mark.timeout(2)
def test_a_late_push_never_repeats_a_timestamp():
    assert stamps([0, 0.020, 0.051, 0.060]) == [0, 960, 2880, 3840]


@pytest.mark.timeout(2)
def test_a_pause_still_jumps_ahead():
    assert stamps([0, 0.020, 1.020]) == [0, 960, 48960]
