"""`VoiceReceiver`: Discord users' Opus frames out of voice_recv, through DAVE, onto the loop.

One packet's way in:

1. discord.py's socket reader thread hands the datagram to voice_recv's `AudioReader`, which
   removes the transport encryption (`aead_xchacha20_poly1305_rtpsize`) and the RTP header
   extension, and queues the packet in a per-SSRC buffer;
2. voice_recv's router thread calls our sink's `write()`, which only appends (SSRC, RTP
   timestamp, payload) to a deque and, once per batch, wakes the event loop with
   `call_soon_threadsafe`: it never blocks;
3. on the event loop: SSRC -> user (voice_recv's map, filled from SPEAKING op 5), the DAVE
   step (DESIGN.md §5), and the `deliver(user_id, opus, rtp_timestamp)` callback.

DAVE runs on the loop because discord.py changes the `davey.DaveSession` there (commits,
welcomes, transitions): one thread owns the session's state on our side. Frames of the
previous epoch still decrypt after a transition (davey keeps the old keys for a while). The
other way round is a race: a sender may switch to the new epoch's key before the commit has
reached us over the websocket (UDP overtakes TCP). A frame that fails to decrypt is therefore
held, with that user's later frames behind it, and retried for up to `DAVE_RETRY_MS`; it is
given up (silence, counted) at once when a later frame of the same user decrypts, since then
it is really bad (tampered, replayed), not early.

voice_recv 0.5.2a179 quirks handled here:
- its jitter buffer holds the newest packet back until the next one arrives (`prefsize=1`,
  buffer.py): +20 ms on every frame and a talk spurt's last frame stuck until the next spurt.
  Our decoders get `prefsize=0`; ordering and loss concealment are the listeners' jitter
  buffers' job (the room's, downstream), not ours;
- `UDPKeepAlive` passes its 5000 (ms) to `time.sleep` (seconds): the thread outlives every
  connection by 83 minutes. It is replaced by a no-op: our player sends 50 packets a second
  for as long as we are connected, which keeps any NAT binding open;
- frames from SSRCs not yet mapped are still routed to the sink (reader.py:178): we hold them
  up to `UNMAPPED_HOLD_MS` and deliver them once SPEAKING maps the SSRC (Discord may send
  SPEAKING after a user's first packets);
- gap fillers reach sinks with `opus == b""`: ignored (the room's jitter buffers conceal);
- the reader's threads are stopped without being joined: `detach()` joins them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import davey
from discord.ext import voice_recv
from discord.ext.voice_recv.buffer import HeapJitterBuffer
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader
from discord.ext.voice_recv.router import PacketRouter

from media.audio import OPUS_SILENCE_FRAME

from .counters import VoiceCounters

__all__ = ["DeliverFrame", "VoiceReceiver"]

logger = logging.getLogger(__name__)

UNMAPPED_HOLD_MS = 200
"""How long frames from an SSRC that SPEAKING has not mapped yet are kept for it."""
UNMAPPED_MAX_FRAMES = UNMAPPED_HOLD_MS // 20 + 5
"""Per unmapped SSRC: a little more than the hold time's worth of 20 ms frames."""
UNMAPPED_MAX_SSRCS = 32
"""Unknown SSRCs held at once; more is not a voice call, it is garbage."""
DAVE_RETRY_MS = 150
"""How long a frame that does not decrypt waits for a DAVE transition to reach us."""
DAVE_RETRY_INTERVAL_S = 0.01
DAVE_MAGIC = b"\xfa\xfa"
"""The last two bytes of every DAVE frame (its magic marker)."""
READER_JOIN_S = 2.0
"""voice_recv's event router polls its queue every 0.5 s: its thread ends within that."""

DeliverFrame = Callable[[int, bytes, int], None]
"""`deliver(user_id, opus_payload, rtp_timestamp)`, called on the event loop."""


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
        self._deliver = deliver
        self._counters = counters
        self._on_reader_ended = on_reader_ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._vc: voice_recv.VoiceRecvClient | None = None
        self._reader: AudioReader | None = None
        self._inbox: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._scheduled = False
        self._pending: dict[int, collections.deque[tuple[float, int, bytes]]] = {}
        self._user_of_ssrc: dict[int, int] = {}
        # user -> frames waiting on DAVE: [arrived at, rtp timestamp, payload, opus or None]
        self._undecrypted: dict[int, collections.deque[list[Any]]] = {}
        self._retry: asyncio.TimerHandle | None = None

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
        reader = _Reader(_Sink(self), vc, after=self._reader_after)
        self._reader = reader
        vc._reader = reader  # the websocket hook and SSRC mapping reach the reader through it
        reader.start()
        logger.debug("receiving guild=%s channel=%s", vc.guild.id, vc.channel.id)

    async def detach(self) -> None:
        """Stop receiving and wait for voice_recv's threads to end."""
        reader, vc = self._reader, self._vc
        self._reader = None
        if reader is None:
            return
        if vc is not None and vc._reader is reader:
            vc.stop_listening()  # also clears vc._reader
        elif reader.is_listening():
            reader.stop()
        threads = [reader.packet_router, reader.event_router, reader.speaking_timer]
        await asyncio.to_thread(_join, threads, reader, READER_JOIN_S)
        self._inbox.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._undecrypted.clear()

    def _reader_after(self, error: Exception | None) -> None:
        # voice_recv's stopper thread, once the reader stopped (ours or a disconnect's doing).
        if error is not None:
            logger.warning("voice_recv reader stopped with %r", error)
        if self._on_reader_ended is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_reader_ended, error)
            except RuntimeError:
                pass  # the loop is closed: nobody is left to tell

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
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass

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
        user_id = vc._get_id_from_ssrc(ssrc) if vc is not None else None
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
        waiting = self._undecrypted.get(user_id)
        opus = self._dave_decrypt(user_id, payload)
        if waiting is None and opus is not None:
            self._deliver(user_id, opus, timestamp)
            return
        if waiting is None:
            waiting = self._undecrypted[user_id] = collections.deque()
        waiting.append([time.monotonic(), timestamp, payload, opus])
        self._release(user_id)
        if self._undecrypted and self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(DAVE_RETRY_INTERVAL_S, self._retry_all)

    def _retry_all(self) -> None:
        self._retry = None
        for user_id in list(self._undecrypted):
            for entry in self._undecrypted[user_id]:
                if entry[3] is None:
                    entry[3] = self._dave_decrypt(user_id, entry[2])
            self._release(user_id)
        if self._undecrypted and self._loop is not None:
            self._retry = self._loop.call_later(DAVE_RETRY_INTERVAL_S, self._retry_all)

    def _release(self, user_id: int) -> None:
        """Deliver a user's held frames in order, as far as they are decrypted or given up."""
        waiting = self._undecrypted[user_id]
        horizon = time.monotonic() - DAVE_RETRY_MS / 1000
        while waiting:
            arrived, timestamp, payload, opus = waiting[0]
            if opus is None:
                later_ok = any(entry[3] is not None for entry in waiting)
                if not later_ok and arrived > horizon:
                    break  # maybe early for a transition still on its way: wait
                self._counters.dave_failures += 1
                logger.debug("DAVE decrypt failed user=%d: silence in its place", user_id)
                opus = OPUS_SILENCE_FRAME
            waiting.popleft()
            self._deliver(user_id, opus, timestamp)
        if not waiting:
            del self._undecrypted[user_id]

    def _dave_decrypt(self, user_id: int, payload: bytes) -> bytes | None:
        """The DAVE step of DESIGN.md §5: plain Opus, the silence frame, or None when the
        frame does not decrypt (yet)."""
        if payload == OPUS_SILENCE_FRAME:
            # DAVE passes the silence frame through unencrypted.
            self._counters.silence_frames += 1
            return payload
        connection = self._vc._connection if self._vc is not None else None
        session: Any = connection.dave_session if connection is not None else None
        encrypted = payload.endswith(DAVE_MAGIC)
        if session is None or not session.ready:
            if encrypted:
                # A DAVE frame before our group exists (e.g. alone in the call until now).
                self._counters.dave_not_ready += 1
                return OPUS_SILENCE_FRAME
            return payload  # a call without DAVE
        if connection.dave_protocol_version == 0 and not encrypted:  # type: ignore[union-attr]
            return payload  # downgraded call; frames still in flight from before do decrypt
        try:
            opus = session.decrypt(user_id, davey.MediaType.audio, payload)
        except ValueError as exc:
            logger.debug("DAVE decrypt failed user=%d error=%s", user_id, exc)
            return None
        self._counters.dave_decrypted += 1
        return bytes(opus)


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


class _NoKeepAlive:
    """Stands in for voice_recv's `UDPKeepAlive` (see the module docstring)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Reader(AudioReader):
    """voice_recv's reader with a jitter buffer that holds nothing back and no keepalive thread."""

    def __init__(
        self, sink: voice_recv.AudioSink, vc: voice_recv.VoiceRecvClient, *, after: Any
    ) -> None:
        super().__init__(sink, vc, after=after)
        self.keepalive = _NoKeepAlive()  # type: ignore[assignment]
        router = self.packet_router
        router.get_decoder = _prompt_decoder_factory(router)  # type: ignore[method-assign,assignment]


def _prompt_decoder_factory(router: PacketRouter) -> Callable[[int], PacketDecoder]:
    """`PacketRouter.get_decoder`, but each new decoder's buffer releases packets at once."""

    def get_decoder(ssrc: int) -> PacketDecoder:
        with router._lock:
            decoder = router.decoders.get(ssrc)
            if decoder is None:
                decoder = PacketDecoder(router, ssrc)
                decoder._buffer = HeapJitterBuffer(prefsize=0)
                router.decoders[ssrc] = decoder
            return decoder

    return get_decoder


def _join(threads: list[threading.Thread], reader: AudioReader, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            # The speaking timer can miss its one wake-up (voice_recv sets and clears its
            # Event at once): nudge it until it sees the end flag.
            reader.speaking_timer.notify()
            thread.join(0.05)
        if thread.is_alive():
            logger.warning("voice_recv thread %s did not end within %.1f s", thread.name, timeout_s)
