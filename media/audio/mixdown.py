"""`Mixdown`: subscribed Opus streams → jitter buffers → decoders → one 20 ms PCM frame.

The output is pulled by whoever owns the playout clock (Discord's player thread asks every
20 ms; tests and the web side use a paced task), so there is no second clock to drift
against. Each read drains the streams' inbound queues into their jitter buffers, decodes what
each buffer says to play (packet, FEC or PLC), and mixes. With no stream playing it returns
shared silence without decoding anything; with one it returns that stream's frame unmixed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, fields

from .inbound import InboundOpus
from .jitter import JitterBuffer
from .mixer import Mixer, Pcm
from .opus import OpusDecoder, OpusError

__all__ = ["Mixdown", "MixdownStats", "StreamTotals"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class MixdownStats:
    frames: int = 0
    silent_frames: int = 0
    single_frames: int = 0
    mixed_frames: int = 0
    decode_errors: int = 0


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


class Mixdown:
    """Thread-safe: streams change on the event loop, frames are read on the playout thread."""

    def __init__(self) -> None:
        self._streams: tuple[_Stream, ...] = ()
        self._lock = threading.Lock()
        self._mixer = Mixer(channels=1)
        self.stats = MixdownStats()
        self._removed = StreamTotals()

    def add(self, key: Hashable, inbound: InboundOpus) -> None:
        stream = _Stream(key, inbound, JitterBuffer(), OpusDecoder(channels=1))
        with self._lock:
            self._streams = tuple(s for s in self._streams if s.key != key) + (stream,)

    def remove(self, key: Hashable) -> None:
        with self._lock:
            gone = [s for s in self._streams if s.key == key]
            self._streams = tuple(s for s in self._streams if s.key != key)
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

    def _decode(self, stream: _Stream, now: float) -> Pcm | None:
        inbound, jitter = stream.inbound, stream.jitter
        while (packet := inbound.poll()) is not None:
            jitter.push(packet)
        frame = jitter.pop(now)
        if frame is None:
            return None
        try:
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

    def read_frame(self, now: float | None = None) -> Pcm:
        """The next 20 ms of mono 48 kHz int16 PCM (960 samples)."""
        when = time.monotonic() if now is None else now
        with self._lock:
            frames = []
            for stream in self._streams:
                pcm = self._decode(stream, when)
                stream.speaking = pcm is not None
                if pcm is not None and pcm.shape == (self._mixer.samples,):
                    frames.append(pcm)
            out = self._mixer.mix(frames)
        self.stats.frames += 1
        if not frames:
            self.stats.silent_frames += 1
        elif len(frames) == 1:
            self.stats.single_frames += 1
        else:
            self.stats.mixed_frames += 1
        return out

    def close(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, ()
        for stream in streams:
            stream.decoder.close()

