"""Opus encoding and decoding through libopus, bound with ctypes.

PyAV wraps libopus but exposes neither in-band FEC decoding nor packet loss concealment,
which the jitter buffer needs, so this module calls libopus directly. It loads the copy
that ships inside the PyAV wheel (`av.libs/libopus*.so*`): libopus is not a system package
on our hosts. `SWITCHBOARD_LIBOPUS` overrides the path.

Encoders and decoders are not thread-safe: each holds native state and reusable buffers,
so use one from one thread (or one task) at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from .packet import FRAME_SAMPLES, SAMPLE_RATE_HZ

logger = logging.getLogger(__name__)

LIBOPUS_ENV = "SWITCHBOARD_LIBOPUS"

MAX_PACKET_BYTES = 1500
"""Output buffer for one encoded packet: libopus needs at most 1275 bytes per 20 ms frame."""
MAX_DECODED_SAMPLES = SAMPLE_RATE_HZ * 120 // 1000
"""Per channel: the longest Opus packet is 120 ms."""

_OPUS_OK = 0
_OPUS_APPLICATION = {"voip": 2048, "audio": 2049}
_OPUS_SET_BITRATE_REQUEST = 4002
_OPUS_SET_INBAND_FEC_REQUEST = 4012
_OPUS_SET_PACKET_LOSS_PERC_REQUEST = 4014
_OPUS_SET_DTX_REQUEST = 4016
_OPUS_RESET_STATE = 4028
_OPUS_AUTO = -1000
# From libopus' opus_private.h: handled by every libopus build, but not in its public header.
_OPUS_SET_FORCE_MODE_REQUEST = 11002
_MODE_CELT_ONLY = 1002
_BITRATE_RANGE_BPS = (6_000, 510_000)

Application = Literal["voip", "audio"]
Pcm = npt.NDArray[np.int16]


class OpusError(RuntimeError):
    """libopus refused a call; `code` is its (negative) error code."""

    def __init__(self, operation: str, code: int) -> None:
        super().__init__(f"{operation} failed: {_strerror(code)} ({code})")
        self.code = code


def find_libopus() -> Path:
    """Where libopus is: `$SWITCHBOARD_LIBOPUS`, else PyAV's bundled copy, else the system's."""
    override = os.environ.get(LIBOPUS_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{LIBOPUS_ENV}={override} is not a file")
        return path
    # find_spec locates the wheel without importing av, which is slow and not needed here.
    spec = importlib.util.find_spec("av")
    if spec is not None and spec.origin is not None:
        bundled = sorted((Path(spec.origin).parent.parent / "av.libs").glob("libopus*.so*"))
        if bundled:
            return bundled[0]
    system = ctypes.util.find_library("opus")
    if system is None:
        raise FileNotFoundError(
            f"libopus not found: install PyAV (it bundles libopus) or set {LIBOPUS_ENV}"
        )
    return Path(system)


@functools.cache
def _libopus() -> ctypes.CDLL:
    path = find_libopus()
    lib = ctypes.CDLL(str(path))
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = c_char_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encode.argtypes = [c_void_p, c_void_p, c_int, c_void_p, ctypes.c_int32]
    lib.opus_encode.restype = ctypes.c_int32
    # opus_encoder_ctl is variadic: only the fixed arguments may be declared.
    lib.opus_encoder_ctl.restype = c_int
    lib.opus_decoder_ctl.restype = c_int
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_destroy.restype = None
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decode.argtypes = [c_void_p, c_char_p, ctypes.c_int32, c_void_p, c_int, c_int]
    lib.opus_decode.restype = c_int
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    logger.info("loaded %s from %s", lib.opus_get_version_string().decode(), path)
    return lib


def _strerror(code: int) -> str:
    return str(_libopus().opus_strerror(code).decode())


def _check_channels(channels: int) -> None:
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels}")


class OpusEncoder:
    """Encodes 20 ms frames of 48 kHz int16 PCM into Opus packets. Not thread-safe."""

    def __init__(
        self,
        channels: int = 1,
        bitrate_bps: int = 32_000,
        application: Application = "voip",
        fec: bool = True,
        dtx: bool = False,
        packet_loss_pct: int = 10,
    ) -> None:
        self._state: int | None = None
        _check_channels(channels)
        if application not in _OPUS_APPLICATION:
            raise ValueError(f"application must be 'voip' or 'audio', not {application!r}")
        if not _BITRATE_RANGE_BPS[0] <= bitrate_bps <= _BITRATE_RANGE_BPS[1]:
            raise ValueError(f"bitrate_bps must be within {_BITRATE_RANGE_BPS}, not {bitrate_bps}")
        if not 0 <= packet_loss_pct <= 100:
            raise ValueError(f"packet_loss_pct must be within 0..100, not {packet_loss_pct}")
        self.channels = channels
        self._lib = _libopus()
        error = ctypes.c_int()
        state = self._lib.opus_encoder_create(
            SAMPLE_RATE_HZ, channels, _OPUS_APPLICATION[application], ctypes.byref(error)
        )
        if error.value != _OPUS_OK or not state:
            raise OpusError("opus_encoder_create", error.value)
        self._state = state
        self._ctl(_OPUS_SET_BITRATE_REQUEST, bitrate_bps)
        self._ctl(_OPUS_SET_INBAND_FEC_REQUEST, int(fec))
        # The encoder only spends bits on FEC in proportion to the loss it expects.
        self._ctl(_OPUS_SET_PACKET_LOSS_PERC_REQUEST, packet_loss_pct)
        self._ctl(_OPUS_SET_DTX_REQUEST, int(dtx))
        self._samples = FRAME_SAMPLES * channels
        self._pcm = (ctypes.c_int16 * self._samples)()
        self._pcm_view = np.frombuffer(self._pcm, dtype=np.int16)
        self._packet = (ctypes.c_ubyte * MAX_PACKET_BYTES)()

    def _ctl(self, request: int, value: int) -> None:
        code = self._lib.opus_encoder_ctl(
            ctypes.c_void_p(self._state), ctypes.c_int(request), ctypes.c_int32(value)
        )
        if code != _OPUS_OK:
            raise OpusError(f"opus_encoder_ctl({request}, {value})", code)

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one 20 ms frame: shape (960 * channels,) interleaved, or (960, channels)."""
        if self._state is None:
            raise ValueError("encoder is closed")
        if pcm.dtype != np.int16 or pcm.shape not in (
            (self._samples,),
            (FRAME_SAMPLES, self.channels),
        ):
            raise ValueError(
                f"expected int16 PCM of shape ({self._samples},) or "
                f"({FRAME_SAMPLES}, {self.channels}), got {pcm.dtype} {pcm.shape}"
            )
        # Copying into our own C buffer costs well under a microsecond and spares us
        # checking the caller's array for contiguity.
        self._pcm_view[:] = pcm.reshape(-1)
        size = self._lib.opus_encode(
            self._state, self._pcm, FRAME_SAMPLES, self._packet, MAX_PACKET_BYTES
        )
        if size < 0:
            raise OpusError("opus_encode", size)
        return ctypes.string_at(self._packet, size)

    def reset(self) -> None:
        """Forget the past signal, as a fresh encoder would (OPUS_RESET_STATE)."""
        if self._state is None:
            raise ValueError("encoder is closed")
        code = self._lib.opus_encoder_ctl(
            ctypes.c_void_p(self._state), ctypes.c_int(_OPUS_RESET_STATE)
        )
        if code != _OPUS_OK:
            raise OpusError("opus_encoder_ctl(OPUS_RESET_STATE)", code)

    def force_celt(self, celt_only: bool) -> None:
        """Code in CELT only (True), or let libopus choose SILK, hybrid or CELT (False).

        A decoder that switches between two encoders' streams in different modes has no state
        for the new mode and fades in over tens of ms; matching the other stream's mode avoids
        that dip (see `bot.voice.send`)."""
        self._ctl(_OPUS_SET_FORCE_MODE_REQUEST, _MODE_CELT_ONLY if celt_only else _OPUS_AUTO)

    def close(self) -> None:
        """Free the native encoder; idempotent."""
        if self._state is not None:
            self._lib.opus_encoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class OpusDecoder:
    """Decodes Opus packets into 48 kHz int16 PCM, interleaved. Not thread-safe."""

    def __init__(self, channels: int = 1) -> None:
        self._state: int | None = None
        _check_channels(channels)
        self.channels = channels
        self._lib = _libopus()
        error = ctypes.c_int()
        state = self._lib.opus_decoder_create(SAMPLE_RATE_HZ, channels, ctypes.byref(error))
        if error.value != _OPUS_OK or not state:
            raise OpusError("opus_decoder_create", error.value)
        self._state = state
        self._pcm = (ctypes.c_int16 * (MAX_DECODED_SAMPLES * channels))()
        self._pcm_view = np.frombuffer(self._pcm, dtype=np.int16)

    def decode(self, payload: bytes) -> Pcm:
        """Decode one packet: 960 * channels samples for the usual 20 ms packet.

        A packet of another duration (10, 40, 60 ms...) decodes to that many samples.
        """
        if not payload:
            raise ValueError("empty payload: use decode_plc() for a missing packet")
        return self._decode("opus_decode", payload, MAX_DECODED_SAMPLES, fec=False)

    def decode_fec(self, next_payload: bytes) -> Pcm:
        """Recover the lost 20 ms frame *before* `next_payload` from its in-band FEC.

        libopus itself falls back to concealment (PLC) when the packet carries no FEC data
        (the sender had FEC off, or the packet is CELT-only). Call `decode(next_payload)`
        afterwards as usual.
        """
        if not next_payload:
            raise ValueError("empty payload: use decode_plc() when no next packet exists")
        return self._decode("opus_decode(fec)", next_payload, FRAME_SAMPLES, fec=True)

    def decode_plc(self) -> Pcm:
        """Conceal one missing 20 ms frame (also how DTX gaps are filled)."""
        return self._decode("opus_decode(plc)", None, FRAME_SAMPLES, fec=False)

    def _decode(self, operation: str, payload: bytes | None, max_samples: int, fec: bool) -> Pcm:
        if self._state is None:
            raise ValueError("decoder is closed")
        size = len(payload) if payload is not None else 0
        # For PLC and FEC libopus needs max_samples to be exactly the missing duration.
        samples = self._lib.opus_decode(
            self._state, payload, size, self._pcm, max_samples, int(fec)
        )
        if samples < 0:
            raise OpusError(operation, samples)
        return self._pcm_view[: samples * self.channels].copy()

    def reset(self) -> None:
        """Forget the past stream, as a fresh decoder would (OPUS_RESET_STATE)."""
        if self._state is None:
            raise ValueError("decoder is closed")
        code = self._lib.opus_decoder_ctl(
            ctypes.c_void_p(self._state), ctypes.c_int(_OPUS_RESET_STATE)
        )
        if code != _OPUS_OK:
            raise OpusError("opus_decoder_ctl(OPUS_RESET_STATE)", code)

    def close(self) -> None:
        """Free the native decoder; idempotent."""
        if self._state is not None:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
