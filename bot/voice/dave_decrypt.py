"""`DaveDecryptor`: the DAVE step of the receive path, with its hold-and-retry queue.

After voice_recv removed the transport encryption, each frame is still end-to-end encrypted
with the sender's DAVE key (docs/discord-voice.md, "DAVE"). On the event loop (where
discord.py changes the `davey.DaveSession`: commits, welcomes, transitions) every frame is
decrypted against the session as it is at that moment:

- the Opus silence frame `F8 FF FE` passes through (DAVE never encrypts it);
- a DAVE frame (ends in the magic marker `FA FA`) while we have no group yet becomes silence
  (`dave_not_ready`);
- a plain frame on a call without DAVE, or after a downgrade, passes through;
- anything else goes through `DaveSession.decrypt`.

A frame that does not decrypt may be early rather than bad: a sender switches to the new
epoch's key once it has the commit, and its UDP frames can overtake the commit on our
websocket. Such a frame is held, with that user's later frames queued behind it, and retried
every `DAVE_RETRY_INTERVAL_S` for up to `DAVE_RETRY_MS`. Held frames are always retried, in
order, before a newer frame of the same user is decrypted: davey refuses any frame older than
the first one it decrypted under a new key (gaps after that are tolerated), so once a later
frame has opened the new epoch an earlier one never decrypts. A held frame is given up
(silence in its place, counted in `dave_failures`) only after a retry against the current
state failed and either a later frame of that user decrypted (so it is bad: tampered,
replayed) or its time is up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import davey

from media.audio import OPUS_SILENCE_FRAME

from .compat import DaveState
from .counters import VoiceCounters

__all__ = ["DAVE_RETRY_MS", "DaveDecryptor", "DeliverFrame", "HeldFrame"]

logger = logging.getLogger(__name__)

DAVE_RETRY_MS = 150
"""How long a frame that does not decrypt waits for a DAVE transition to reach us."""
DAVE_RETRY_INTERVAL_S = 0.01
DAVE_MAGIC = b"\xfa\xfa"
"""The last two bytes of every DAVE frame (its magic marker)."""

DeliverFrame = Callable[[int, bytes, int], None]
"""`deliver(user_id, opus_payload, rtp_timestamp)`, called on the event loop."""


@dataclass(slots=True)
class HeldFrame:
    """One frame of a user waiting, in arrival order, for itself or an earlier one to decrypt."""

    arrived_at: float
    """`time.monotonic()` when it first failed (or queued behind one that did)."""
    rtp_timestamp: int
    payload: bytes
    """As received: DAVE-encrypted."""
    opus: bytes | None = None
    """The decrypted Opus, or None while it does not decrypt."""


class DaveDecryptor:
    """Decrypts each user's frames in order and hands them to `deliver` (on the event loop).

    `dave_state()` reads the connection's DAVE session afresh (it changes with every rejoin);
    None when there is no connection.
    """

    def __init__(
        self,
        deliver: DeliverFrame,
        counters: VoiceCounters,
        dave_state: Callable[[], DaveState | None],
    ) -> None:
        self._deliver = deliver
        self._counters = counters
        self._dave_state = dave_state
        self._held: dict[int, collections.deque[HeldFrame]] = {}
        self._retry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        """Frames waiting, over all users."""
        return sum(len(frames) for frames in self._held.values())

    def push(self, user_id: int, rtp_timestamp: int, payload: bytes) -> None:
        """One frame of `user_id`, in the order received. Call on the event loop."""
        held = self._held.get(user_id)
        if held is None:
            opus = self._decrypt(user_id, payload)
            if opus is not None:
                self._deliver(user_id, opus, rtp_timestamp)
                return
            held = self._held[user_id] = collections.deque()
            held.append(HeldFrame(time.monotonic(), rtp_timestamp, payload))
            self._counters.dave_held += 1
            logger.debug("DAVE frame held user=%d: does not decrypt yet", user_id)
        else:
            # Earlier frames first: once this one decrypts, theirs would no longer.
            self._retry_user(user_id, held)
            opus = self._decrypt(user_id, payload)
            held.append(HeldFrame(time.monotonic(), rtp_timestamp, payload, opus))
            if opus is None:
                self._counters.dave_held += 1
        self._release(user_id, held)
        self._schedule_retry()

    def clear(self) -> None:
        """Forget every held frame (the connection they came from is gone)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._held.clear()

    # -- the queue --------------------------------------------------------------------------

    def _schedule_retry(self) -> None:
        if self._held and self._retry is None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(DAVE_RETRY_INTERVAL_S, self._retry_all)

    def _retry_all(self) -> None:
        self._retry = None
        for user_id, held in list(self._held.items()):
            self._retry_user(user_id, held)
            self._release(user_id, held)
        self._schedule_retry()

    def _retry_user(self, user_id: int, held: collections.deque[HeldFrame]) -> None:
        for frame in held:
            if frame.opus is None:
                frame.opus = self._decrypt(user_id, frame.payload)
                if frame.opus is not None:
                    self._counters.dave_late_decrypted += 1

    def _release(self, user_id: int, held: collections.deque[HeldFrame]) -> None:
        """Deliver the user's held frames in order, as far as they are decrypted or given up.

        Call only right after a retry of the undecrypted ones against the current state.
        """
        horizon = time.monotonic() - DAVE_RETRY_MS / 1000
        while held:
            frame = held[0]
            opus = frame.opus
            if opus is None:
                later_decrypted = any(other.opus is not None for other in held)
                if not later_decrypted and frame.arrived_at > horizon:
                    break  # maybe early for a transition still on its way: wait
                self._counters.dave_failures += 1
                logger.debug("DAVE decrypt failed user=%d: silence in its place", user_id)
                opus = OPUS_SILENCE_FRAME
            held.popleft()
            self._deliver(user_id, opus, frame.rtp_timestamp)
        if not held:
            del self._held[user_id]

    # -- one frame ----------------------------------------------------------------------------

    def _decrypt(self, user_id: int, payload: bytes) -> bytes | None:
        """Plain Opus, the silence frame, or None when the frame does not decrypt (yet)."""
        if payload == OPUS_SILENCE_FRAME:
            self._counters.silence_frames += 1
            return payload
        state = self._dave_state()
        encrypted = payload.endswith(DAVE_MAGIC)
        if state is None or state.session is None or not state.session.ready:
            if encrypted:
                # A DAVE frame before our group exists (e.g. alone in the call until now).
                self._counters.dave_not_ready += 1
                return OPUS_SILENCE_FRAME
            return payload  # a call without DAVE
        if state.protocol_version == 0 and not encrypted:
            return payload  # downgraded call; frames still in flight from before do decrypt
        try:
            opus = state.session.decrypt(user_id, davey.MediaType.audio, payload)
        except ValueError as exc:
            logger.debug("DAVE decrypt failed user=%d error=%s", user_id, exc)
            return None
        self._counters.dave_decrypted += 1
        return bytes(opus)
