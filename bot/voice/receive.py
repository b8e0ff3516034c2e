"""`VoiceReceiver`: Discord users' Opus frames out of voice_recv, through DAVE, onto the loop.

One packet's way in:

1. discord.py's socket reader thread hands the datagram to voice_recv's `AudioReader`, which
   removes the transport encryption (`aead_xchacha20_poly1305_rtpsize`) and the RTP header
   extension, and queues the packet in a per-SSRC buffer;
2. voice_recv's router thread calls our sink's `write()`, which only appends (SSRC, RTP
   timestamp, payload) to a deque and, once per batch, wakes the event loop with
   `call_soon_threadsafe`: it never blocks;
3. on the event loop: SSRC -> user (voice_recv's map, filled from SPEAKING op 5), then the
   DAVE step (`DaveDecryptor`, which may hold a frame that raced a DAVE transition), and the
   `deliver(user_id, opus, rtp_timestamp)` callback.

DAVE runs on the loop because discord.py changes the `davey.DaveSession` there (commits,
welcomes, transitions): one thread owns the session's state on our side.

voice_recv's reader is ours (`compat.ReceiveReader`: prompt jitter buffers, no keepalive
thread; see `compat`). Beyond that, what its behaviour asks of us here:
- frames from SSRCs not yet mapped are still routed to the sink: we hold them up to
  `UNMAPPED_HOLD_MS` and deliver them once SPEAKING maps the SSRC (Discord may send
  SPEAKING after a user's first packets);
- gap fillers reach sinks with `opus == b""`: ignored (the room's jitter buffers conceal);
- the reader's threads are stopped without being joined: `detach()` joins them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from discord.ext import voice_recv

from . import compat
from .counters import VoiceCounters
from .dave_decrypt import DaveDecryptor, DeliverFrame

__all__ = ["DeliverFrame", "VoiceReceiver"]

logger = logging.getLogger(__name__)

UNMAPPED_HOLD_MS = 200
"""How long frames from an SSRC that SPEAKING has not mapped yet are kept for it."""
UNMAPPED_MAX_FRAMES = UNMAPPED_HOLD_MS // 20 + 5
"""Per unmapped SSRC: a little more than the hold time's worth of 20 ms frames."""
UNMAPPED_MAX_SSRCS = 32
"""Unknown SSRCs held at once; more is not a voice call, it is garbage."""
READER_JOIN_S = 2.0
"""voice_recv's event router polls its queue every 0.5 s: its thread ends within that."""


class VoiceReceiver:
    """Receives from one voice client at a time; `attach()` again after a rejoin.

    `deliver` gets each user's frames in order, DAVE-decrypted (or the silence frame in place
    of one that could not be), with the sender's RTP timestamp.
    """

    def __init__(
        self,
        deliver: DeliverFrame,
        counters: VoiceCounters,
        *,
        on_reader_ended: Callable[[Exception | None], None] | None = None,
    ) -> None:
        self._counters = counters
        self._on_reader_ended = on_reader_ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._vc: voice_recv.VoiceRecvClient | None = None
        self._reader: compat.ReceiveReader | None = None
        self._inbox: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._scheduled = False
        self._pending: dict[int, collections.deque[tuple[float, int, bytes]]] = {}
        self._user_of_ssrc: dict[int, int] = {}
        self._dave = DaveDecryptor(deliver, counters, self._dave_state)

    # -- lifecycle (event loop) -------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._reader is not None and self._reader.is_listening()

    def attach(self, vc: voice_recv.VoiceRecvClient) -> None:
        """Start receiving from `vc` (connected). What `VoiceRecvClient.listen()` does, with
        our reader in place of voice_recv's."""
        if self._reader is not None:
            raise RuntimeError("detach() the previous voice client first")
        self._loop = asyncio.get_running_loop()
        self._vc = vc
        self._pending.clear()
        self._user_of_ssrc.clear()
        reader = compat.ReceiveReader(_Sink(self), vc, after=self._reader_after)
        self._reader = reader
        compat.install_reader(vc, reader)
        logger.debug("receiving guild=%s channel=%s", vc.guild.id, vc.channel.id)

    async def detach(self) -> None:
        """Stop receiving and wait for voice_recv's threads to end."""
        reader, vc = self._reader, self._vc
        self._reader = None
        if reader is None:
            return
        compat.remove_reader(vc, reader)
        await asyncio.to_thread(compat.join_reader, reader, READER_JOIN_S)
        self._inbox.clear()
        self._dave.clear()

    def _reader_after(self, error: Exception | None) -> None:
        # voice_recv's stopper thread, once the reader stopped (ours or a disconnect's doing).
        if error is not None:
            logger.warning("voice_recv reader stopped with %r", error)
        if self._on_reader_ended is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                self._loop.call_soon_threadsafe(self._on_reader_ended, error)

    # -- voice_recv's router thread ---------------------------------------------------------

    def _on_packet(self, data: voice_recv.VoiceData) -> None:
        opus = data.opus
        if not opus:
            self._counters.gap_fillers += 1
            return
        packet = data.packet
        self._inbox.append((packet.ssrc, packet.timestamp, bytes(opus)))
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drain)

    # -- the event loop ---------------------------------------------------------------------

    def _drain(self) -> None:
        # Cleared before draining: a packet appended after the last popleft() schedules anew.
        self._scheduled = False
        now = time.monotonic()
        inbox = self._inbox
        while inbox:
            ssrc, timestamp, payload = inbox.popleft()
            self._counters.frames_received += 1
            self._route(ssrc, timestamp, payload, now)
        if self._pending:
            self.expire(now)

    def _route(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> None:
        user_id = self._user_id(ssrc)
        if user_id is None:
            self._hold(ssrc, timestamp, payload, now)
            return
        if ssrc in self._pending:
            self._flush(ssrc, user_id)
        self._forward(user_id, timestamp, payload)

    def _user_id(self, ssrc: int) -> int | None:
        vc = self._vc
        user_id = compat.user_id_of_ssrc(vc, ssrc) if vc is not None else None
        if user_id is not None:
            self._user_of_ssrc[ssrc] = user_id
        return user_id

    def user_of_ssrc(self, ssrc: int | None) -> int | None:
        """The user last seen sending with `ssrc` (for leave events that lack the member)."""
        return self._user_of_ssrc.get(ssrc) if ssrc is not None else None

    def mapped(self, ssrc: int) -> None:
        """SPEAKING mapped `ssrc`: deliver what was held for it now, not with its next frame."""
        if ssrc in self._pending:
            user_id = self._user_id(ssrc)
            if user_id is not None:
                self._flush(ssrc, user_id)

    def _hold(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> None:
        held = self._pending.get(ssrc)
        if held is None:
            if len(self._pending) >= UNMAPPED_MAX_SSRCS:
                self._counters.unmapped_dropped += 1
                return
            held = self._pending[ssrc] = collections.deque()
            logger.debug("holding frames of unmapped ssrc=%d", ssrc)
        if len(held) >= UNMAPPED_MAX_FRAMES:
            held.popleft()
            self._counters.unmapped_dropped += 1
        held.append((now, timestamp, payload))
        self._counters.unmapped_buffered += 1

    def _flush(self, ssrc: int, user_id: int) -> None:
        held = self._pending.pop(ssrc, None)
        if not held:
            return
        logger.debug("ssrc=%d mapped to user=%d: %d held frames", ssrc, user_id, len(held))
        self._counters.unmapped_flushed += len(held)
        for _, timestamp, payload in held:
            self._forward(user_id, timestamp, payload)

    def expire(self, now: float | None = None) -> None:
        """Drop held frames older than `UNMAPPED_HOLD_MS`."""
        now = time.monotonic() if now is None else now
        horizon = now - UNMAPPED_HOLD_MS / 1000
        for ssrc in list(self._pending):
            held = self._pending[ssrc]
            while held and held[0][0] < horizon:
                held.popleft()
                self._counters.unmapped_dropped += 1
            if not held:
                del self._pending[ssrc]

    def _forward(self, user_id: int, timestamp: int, payload: bytes) -> None:
        vc = self._vc
        if vc is not None and user_id == vc.user.id:
            self._counters.own_dropped += 1
            return
        self._dave.push(user_id, timestamp, payload)

    def _dave_state(self) -> compat.DaveState | None:
        return compat.dave_state(self._vc) if self._vc is not None else None


class _Sink(voice_recv.AudioSink):
    """The voice_recv sink: Opus mode; everything else happens in `VoiceReceiver`."""

    def __init__(self, receiver: VoiceReceiver) -> None:
        super().__init__()
        self._receiver = receiver

    def wants_opus(self) -> bool:
        return True

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        self._receiver._on_packet(data)

    def cleanup(self) -> None:
        pass
