"""`Mixdown`: subscribed Opus streams → jitter buffers → decoders → one 20 ms frame.

The output is pulled by whoever owns the playout clock (Discord's player thread asks every
20 ms; tests and the web side use a paced task), so there is no second clock to drift
against. Each read drains the streams' inbound queues into their jitter buffers, decodes what
each buffer says to play (packet, FEC or PLC), and mixes. With no stream playing it returns
shared silence without decoding anything; with one it returns that stream's frame unmixed.

`read_output()` is the same for a consumer that sends Opus: when exactly one stream plays a
received 20 ms packet, that packet is handed over as it came (no decode, and the consumer
needs no encode). The stream's decoder then falls behind; when mixing resumes it is reset and
fed the last few passed-through packets first (`PRIME_PACKETS`), and the output carries the
last passed-through frame as decoded, so the consumer can prime its encoder with it too: the
mix continues the passed-through audio instead of starting from a cold codec (a click).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields

from .inbound import InboundOpus
from .jitter import JitterBuffer, PlayoutFrame
from .mixer import Mixer, Pcm
from .opus import OpusDecoder, OpusError
from .packet import FRAME_SAMPLES, opus_packet_samples

__all__ = ["Mixdown", "MixdownOutput", "MixdownStats", "StreamTotals"]

logger = logging.getLogger(__name__)

PRIME_PACKETS = 3
"""Packets a stale decoder is fed after a passthrough stretch before it decodes again. Opus
predicts each frame from the previous ones (band energies, LPC state), and a reset decoder
converges within a few frames; three decodes, once per seam, cost next to nothing."""


@dataclass(slots=True)
class MixdownStats:
    frames: int = 0
    silent_frames: int = 0
    single_frames: int = 0
    mixed_frames: int = 0
    passthrough_frames: int = 0
    """Frames handed over as the one playing stream's packet (`read_output()`), undecoded."""
    decode_errors: int = 0


@dataclass(frozen=True, slots=True)
class MixdownOutput:
    """The next 20 ms for a consumer that sends Opus.

    `packet`: send this received Opus packet as is. `pcm`: encode this (mono 48 kHz int16);
    `prime`, when set, is the 20 ms just before it as sent by passthrough (decoded): encode
    it first into a reset encoder, and discard that packet. Neither: nobody is playing.
    """

    packet: bytes | None = None
    pcm: Pcm | None = None
    prime: Pcm | None = None


@dataclass(frozen=True, slots=True)
class StreamTotals:
    """What the streams lost or concealed, summed over live and removed ones (it never goes
    backwards, so it can be exported as counters)."""

    underruns: int = 0
    late_dropped: int = 0
    concealed_frames: int = 0
    fec_recovered: int = 0
    restarts: int = 0
    inbound_dropped: int = 0

    def __add__(self, other: StreamTotals) -> StreamTotals:
        return StreamTotals(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(StreamTotals))
        )


def _totals(stream: _Stream) -> StreamTotals:
    j = stream.jitter.stats
    return StreamTotals(
        j.underruns,
        j.late_dropped,
        j.plc_frames,
        j.fec_recovered,
        j.restarts,
        stream.inbound.stats().dropped,
    )


@dataclass(slots=True)
class _Stream:
    key: Hashable
    inbound: InboundOpus
    jitter: JitterBuffer
    decoder: OpusDecoder
    speaking: bool = False
    passed: collections.deque[bytes] = field(
        default_factory=lambda: collections.deque(maxlen=PRIME_PACKETS)
    )
    """The latest packets handed over undecoded; non-empty means the decoder is behind."""


class Mixdown:
    """Thread-safe: streams change on the event loop, frames are read on the playout thread."""

    def __init__(self) -> None:
        self._streams: tuple[_Stream, ...] = ()
        self._lock = threading.Lock()
        self._mixer = Mixer(channels=1)
        self.stats = MixdownStats()
        self._removed = StreamTotals()
        self._passed_last: _Stream | None = None  # the stream passed through by the last read
        self._on_packet: Callable[[], None] | None = None
        self._wake_lock = threading.Lock()  # armed on the playout thread, fired on the loop

    def add(self, key: Hashable, inbound: InboundOpus) -> None:
        stream = _Stream(key, inbound, JitterBuffer(), OpusDecoder(channels=1))
        inbound.on_feed = self._fed
        with self._lock:
            self._streams = (*tuple(s for s in self._streams if s.key != key), stream)

    def wake_on_packet(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` once (on the thread that feeds the streams: the event loop) when
        the next packet of any stream arrives; None disarms. For a consumer that stopped
        reading while nobody played and must learn when to start again."""
        with self._wake_lock:
            self._on_packet = callback

    def _fed(self) -> None:
        if self._on_packet is None:
            return
        with self._wake_lock:
            callback, self._on_packet = self._on_packet, None
        if callback is not None:
            callback()

    def remove(self, key: Hashable) -> None:
        with self._lock:
            gone = [s for s in self._streams if s.key == key]
            self._streams = tuple(s for s in self._streams if s.key != key)
            if self._passed_last in gone:
                self._passed_last = None
        for stream in gone:
            self._removed += _totals(stream)
            stream.decoder.close()

    def totals(self) -> StreamTotals:
        streams = self._streams
        total = self._removed
        for stream in streams:
            total += _totals(stream)
        return total

    def playing(self) -> dict[Hashable, bool]:
        """Which streams produced audio in the last frame (for speaking indicators)."""
        return {s.key: s.speaking for s in self._streams}

    def _next(self, stream: _Stream, now: float) -> PlayoutFrame | None:
        inbound, jitter = stream.inbound, stream.jitter
        while (packet := inbound.poll()) is not None:
            jitter.push(packet)
        return jitter.pop(now)

    def _decode(self, stream: _Stream, frame: PlayoutFrame) -> Pcm | None:
        try:
            if stream.passed:
                self._catch_up(stream)
            if frame.kind == "packet":
                return stream.decoder.decode(frame.payload)  # type: ignore[arg-type]
            if frame.kind == "fec":
                return stream.decoder.decode_fec(frame.payload)  # type: ignore[arg-type]
            return stream.decoder.decode_plc()
        except OpusError as exc:
            # One bad packet costs one frame of that speaker, never the mix.
            self.stats.decode_errors += 1
            logger.debug("decode failed stream=%s error=%s", stream.key, exc)
            return None

    def _catch_up(self, stream: _Stream) -> Pcm | None:
        """Bring a decoder that sat out a passthrough stretch back in step; the last
        passed-through frame as it decodes."""
        passed = list(stream.passed)
        stream.passed.clear()
        stream.decoder.reset()
        pcm = None
        for payload in passed:
            pcm = stream.decoder.decode(payload)
        return pcm

    def read_output(self, now: float | None = None, *, passthrough: bool = True) -> MixdownOutput:
        """The next 20 ms: one stream's packet as it came, or PCM to encode, or nothing.
        `passthrough=False` always decodes and mixes (PCM whenever anyone plays)."""
        when = time.monotonic() if now is None else now
        with self._lock:
            playing = []
            for stream in self._streams:
                frame = self._next(stream, when)
                stream.speaking = frame is not None
                if frame is not None:
                    playing.append((stream, frame))
            passed_last, self._passed_last = self._passed_last, None
            if passthrough and len(playing) == 1:
                stream, frame = playing[0]
                payload = frame.payload
                if (
                    frame.kind == "packet"
                    and payload is not None
                    and opus_packet_samples(payload) == FRAME_SAMPLES  # Discord's frame size
                ):
                    stream.passed.append(payload)
                    self._passed_last = stream
                    self.stats.frames += 1
                    self.stats.passthrough_frames += 1
                    return MixdownOutput(packet=payload)
            prime = None
            if passed_last is not None and passed_last.passed:
                try:
                    prime = self._catch_up(passed_last)
                except OpusError as exc:
                    self.stats.decode_errors += 1
                    logger.debug("decode failed stream=%s error=%s", passed_last.key, exc)
            frames = []
            for stream, frame in playing:
                pcm = self._decode(stream, frame)
                if pcm is None:
                    stream.speaking = False
                elif pcm.shape == (self._mixer.samples,):
                    frames.append(pcm)
            out = self._mixer.mix(frames)
        self.stats.frames += 1
        if not frames:
            self.stats.silent_frames += 1
            return MixdownOutput(prime=prime)
        if len(frames) == 1:
            self.stats.single_frames += 1
        else:
            self.stats.mixed_frames += 1
        return MixdownOutput(pcm=out, prime=prime)

    def read_frame(self, now: float | None = None) -> Pcm:
        """The next 20 ms of mono 48 kHz int16 PCM (960 samples)."""
        out = self.read_output(now, passthrough=False)
        return out.pcm if out.pcm is not None else self._mixer.mix(())

    def close(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, ()
        for stream in streams:
            stream.decoder.close()
