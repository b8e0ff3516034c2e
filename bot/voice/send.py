"""`BridgeSource`: the room's mix as one never-ending Discord audio source.

discord.py's player thread calls `read()` every 20 ms (paced from its own wall-clock origin)
and sends what it returns; `b''` would end playback, so `read()` never returns it. Each call
pulls the next 20 ms of the room minus this bridge (`Bridge.read_frame`, thread-safe) and
returns one Opus packet: the encoded mix, or the Opus silence frame when the room is quiet, so
our RTP timestamp keeps running (a sender whose timestamp freezes makes Discord clients'
jitter buffers grow to seconds over an hour).

Why an Opus source (`is_opus()` True) and our own encoder rather than a PCM source: discord.py
would encode with its `opus.Encoder` defaults (discord/opus.py, VoiceClient.play): stereo,
application `audio` (tuned for music), 128 kb/s. Our mix is mono speech, so that would mean
upmixing every frame to 3,840 bytes of stereo and paying for a stereo music encode of it. We
encode mono with libopus' `voip` application (speech-tuned), 64 kb/s, in-band FEC on and 10 %
expected loss; a silent mix costs no encode at all (the 3-byte silence frame, as Discord
clients send). Encryption is unaffected: discord.py DAVE-encrypts whatever the source returns
(`VoiceClient._get_voice_packet`), then applies the transport encryption.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import discord
import numpy as np
import numpy.typing as npt

from media.audio import OPUS_SILENCE_FRAME, OpusEncoder

from .counters import VoiceCounters

__all__ = ["BridgeSource"]

logger = logging.getLogger(__name__)

OPUS_BITRATE_BPS = 64_000
OPUS_EXPECTED_LOSS_PCT = 10
ERROR_LOG_INTERVAL_S = 10.0
"""A failing mix or encoder logs at most this often (it is called 50 times a second)."""


class BridgeSource(discord.AudioSource):
    """Never-ending Opus from `read_frame()` (mono 48 kHz int16, 960 samples per call)."""

    def __init__(
        self,
        read_frame: Callable[[], npt.NDArray[np.int16]],
        counters: VoiceCounters,
        *,
        bitrate_bps: int = OPUS_BITRATE_BPS,
    ) -> None:
        self._read_frame = read_frame
        self._counters = counters
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

    def is_opus(self) -> bool:
        return True

    def read(self) -> bytes:
        with self._lock:
            if self._encoder is None:
                return OPUS_SILENCE_FRAME
            try:
                pcm = self._read_frame()
                if not pcm.any():
                    self._counters.silence_sent += 1
                    return OPUS_SILENCE_FRAME
                packet = self._encoder.encode(pcm)
            except Exception:
                # Raising would end discord.py's player; one silent frame is the better loss.
                self._counters.send_errors += 1
                now = time.monotonic()
                if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                    self._last_error_log = now
                    logger.exception("mixing or encoding a frame for Discord failed")
                return OPUS_SILENCE_FRAME
        self._counters.frames_sent += 1
        return packet

    def cleanup(self) -> None:
        # discord.py calls this whenever a player ends; the link may play this source again
        # (after a reconnect), so the encoder lives until close().
        pass

    def close(self) -> None:
        """Free the encoder; later reads return silence. Idempotent."""
        with self._lock:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None
