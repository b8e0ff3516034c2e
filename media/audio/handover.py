"""Replacing the track of a running aiortc sender without stranding its RTP loop.

`RTCRtpSender.replaceTrack` only swaps the attribute that the sender's loop reads next; a
loop already waiting in the old track's `recv()` stays there until that track yields. Our
tracks can wait indefinitely — an `IdleTrack` forever, an `OpusSourceTrack` until its source
is pushed again (a speaker who went quiet and left) — so a transceiver reused for a new
track stayed silent and the SFU answered its pulls with not_found_track_error. Each of our
send tracks can be told its successor: a `recv()` waiting on it returns the successor's
next frame instead.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from aiortc import MediaStreamTrack, RTCRtpSender

__all__ = ["HandsOver", "replace_track"]


@runtime_checkable
class HandsOver(Protocol):
    def hand_over(self, successor: MediaStreamTrack) -> None:
        """A `recv()` waiting now, or called later, reads from `successor` instead."""


def replace_track(sender: RTCRtpSender, track: MediaStreamTrack) -> None:
    """`sender.replaceTrack(track)`, waking a loop that waits on the previous track."""
    previous = sender.track
    sender.replaceTrack(track)
    if isinstance(previous, HandsOver) and previous is not track:
        previous.hand_over(track)
