"""`BridgeSource`: the room minus this bridge as one Discord audio source, sent Discord's way.

discord.py's player thread calls `read()` every 20 ms (paced from its own wall-clock origin)
and sends what it returns, DAVE- then transport-encrypted (`VoiceClient._get_voice_packet`);
`b''` would end playback, so `read()` never returns it. Each call pulls the next 20 ms of the
room (`Bridge.read_output`, thread-safe) and returns one Opus packet:

- **one room speaker playing**: their packet as it came (no decode, no encode);
- **several, or one whose frame had to be concealed**: the mix, encoded here;
- **nobody**: the Opus silence frame, and after `QUIET_FRAMES_BEFORE_PAUSE` of them the
  player is paused, which is Discord's convention for the end of speech: discord.py sends
  five more silence frames and SPEAKING off, then nothing is mixed, encoded, encrypted or
  sent. The first packet that reaches the room's streams resumes it (SPEAKING on), and the
  first packet sent after the pause carries an RTP timestamp that counts the time paused, as
  a Discord client's does (a timestamp that froze through pauses would make receivers'
  jitter buffers drift).

Switching between passthrough and mixing keeps Discord's stream continuous: discord.py
numbers and timestamps whatever we return, one frame per read, and the mix after a
passthrough stretch starts from an encoder primed with the last passed-through frame
(`MixdownOutput.prime`), in the coding mode of the passed-through packets (CELT-only when
they were CELT, e.g. stereo music-mode senders; libopus' choice otherwise): Discord's decoder
then keeps its state across the seam instead of fading in from a cold mode (a ~30 ms dip).

Why our own encoder rather than discord.py's PCM path: discord.py would encode with its
`opus.Encoder` defaults (stereo, application `audio`, 128 kb/s), i.e. upmix every frame and
pay for a stereo music encode. We encode mono with libopus' `voip` application, 64 kb/s,
in-band FEC on and 10 % expected loss.

`SendMode.MIX` restores the path before passthrough (decode, mix and encode every voiced
frame; silence frames forever while quiet), so benches can compare both in one run.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import discord
from discord.ext import voice_recv

from media.audio import FRAME_MS, FRAME_SAMPLES, OPUS_SILENCE_FRAME, OpusEncoder
from media.audio.mixdown import MixdownOutput
from media.audio.packet import opus_packet_is_celt

from . import compat
from .counters import VoiceCounters

__all__ = ["BridgeSource", "OutputSource", "SendMode"]

logger = logging.getLogger(__name__)

OPUS_BITRATE_BPS = 64_000
OPUS_EXPECTED_LOSS_PCT = 10
ERROR_LOG_INTERVAL_S = 10.0
"""A failing mix or encoder logs at most this often (it is called 50 times a second)."""
QUIET_FRAMES_BEFORE_PAUSE = 5
"""Silence frames sent, paced, before the player pauses (discord.py then adds five more and
SPEAKING off): a pause between words shorter than this costs no SPEAKING round trip."""
PAUSE_BURST_FRAMES = 5
"""Silence frames discord.py sends at once when the player pauses (`AudioPlayer.send_silence`)."""


class SendMode(enum.Enum):
    PASSTHROUGH = "passthrough"
    """One speaker's Opus as is, the mix encoded only when needed, nothing sent while quiet."""
    MIX = "mix"
    """Before issue 14: every frame decoded, mixed and encoded; silence frames while quiet."""


class OutputSource(Protocol):
    """What `BridgeSource` reads (a `media.bridge.Bridge`)."""

    def read_output(self, *, passthrough: bool = True) -> MixdownOutput: ...

    def wake_on_audio(self, callback: Callable[[], None] | None) -> None: ...


class BridgeSource(discord.AudioSource):
    """Never-ending Opus from a bridge's output; see the module docstring."""

    def __init__(
        self,
        bridge: OutputSource,
        counters: VoiceCounters,
        *,
        mode: SendMode = SendMode.PASSTHROUGH,
        bitrate_bps: int = OPUS_BITRATE_BPS,
    ) -> None:
        self._bridge = bridge
        self._counters = counters
        self.mode = mode
        self._encoder: OpusEncoder | None = OpusEncoder(
            channels=1,
            bitrate_bps=bitrate_bps,
            application="voip",
            fec=True,
            dtx=False,
            packet_loss_pct=OPUS_EXPECTED_LOSS_PCT,
        )
        # read() runs on the player thread, close() on the loop: the encoder is not thread-safe.
        self._lock = threading.Lock()
        self._last_error_log = 0.0
        self._vc: voice_recv.VoiceRecvClient | None = None
        self._quiet = 0
        self._paused: tuple[float, int] | None = None  # (when, RTP timestamp of the last packet)
        self._passed_celt = False  # the last passed-through packet was CELT-only

    def is_opus(self) -> bool:
        return True

    def bind(self, vc: voice_recv.VoiceRecvClient) -> None:
        """The voice client the next `vc.play(self)` plays on (the one paused and resumed)."""
        with self._lock:
            self._vc = vc
            self._quiet = 0
            self._paused = None

    def read(self) -> bytes:
        with self._lock:
            if self._encoder is None:
                return OPUS_SILENCE_FRAME
            try:
                packet = self._next_packet(self._encoder)
            except Exception:
                # Raising would end discord.py's player; one silent frame is the better loss.
                self._counters.send_errors += 1
                now = time.monotonic()
                if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                    self._last_error_log = now
                    logger.exception("mixing or encoding a frame for Discord failed")
                return OPUS_SILENCE_FRAME
            if self._paused is not None:
                self._resumed()
            if packet is not None:
                self._quiet = 0
                self._counters.frames_sent += 1
                return packet
            self._counters.silence_sent += 1
            self._quiet += 1
            if self.mode is SendMode.PASSTHROUGH and self._quiet == QUIET_FRAMES_BEFORE_PAUSE:
                self._pause()
            return OPUS_SILENCE_FRAME

    def _next_packet(self, encoder: OpusEncoder) -> bytes | None:
        out = self._bridge.read_output(passthrough=self.mode is SendMode.PASSTHROUGH)
        if out.packet is not None:
            self._counters.frames_passed_through += 1
            self._passed_celt = opus_packet_is_celt(out.packet)
            return out.packet
        if out.pcm is None or not out.pcm.any():
            return None
        if out.prime is not None:
            # Continue from the audio Discord just heard, not from whatever the encoder last saw.
            encoder.reset()
            encoder.force_celt(self._passed_celt)
            encoder.encode(out.prime)
        self._counters.frames_encoded += 1
        return encoder.encode(out.pcm)

    # -- pausing while nobody speaks (player thread, except `_wake`) ---------------------------

    def _pause(self) -> None:
        vc = self._vc
        if vc is None:
            return
        self._paused = (time.monotonic(), compat.rtp_timestamp(vc))
        self._counters.send_pauses += 1
        vc.pause()  # the player sends its silence frames and SPEAKING off, then waits
        self._bridge.wake_on_audio(self._wake)

    def _wake(self) -> None:
        # The event loop: a packet reached the room's streams.
        vc = self._vc
        if vc is not None and vc.is_paused():
            vc.resume()  # SPEAKING on; the player reads again at once

    def _resumed(self) -> None:
        """First read after a pause: move the RTP timestamp on by the time paused."""
        assert self._paused is not None and self._vc is not None
        paused_at, timestamp = self._paused
        self._paused = None
        elapsed = round((time.monotonic() - paused_at) * 1000 / FRAME_MS)
        sent = 1 + PAUSE_BURST_FRAMES  # the frame that paused, and discord.py's burst
        if elapsed > sent:
            compat.set_rtp_timestamp(vc=self._vc, timestamp=timestamp + elapsed * FRAME_SAMPLES)
            self._counters.frames_suppressed += elapsed - sent

    def cleanup(self) -> None:
        # discord.py calls this whenever a player ends; the link may play this source again
        # (after a reconnect), so the encoder lives until close().
        pass

    def close(self) -> None:
        """Free the encoder; later reads return silence. Idempotent."""
        self._bridge.wake_on_audio(None)
        with self._lock:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None
