"""Every use of discord.py's and discord-ext-voice-recv's internals, and every workaround for
their bugs, in one place.

Written against the pinned discord.py 2.7.1 and discord-ext-voice-recv 0.5.2a179
(pyproject.toml). `tests/unit/test_discord_compat.py` checks that each private attribute and
function used here still exists with the shape we rely on, and that each bug worked around is
still there; when a version bump moves one, that test names it. Nothing else in `bot/` touches
a private attribute of either library.

Workarounds (see docs/discord-voice.md, "Library quirks"):

1. voice_recv's `UDPKeepAlive` passes its `delay` of 5000 (meant as ms) to `time.sleep`
   (seconds): its thread outlives every connection by 83 minutes. `ReceiveReader` replaces it
   with a no-op: our player sends 50 packets a second while connected, which keeps any NAT
   binding open.
2. voice_recv's per-SSRC jitter buffer (`HeapJitterBuffer`, default `prefsize=1`) holds the
   newest packet back until the next arrives: +20 ms on every frame, and a talk spurt's last
   frame stuck until the next spurt. `ReceiveReader`'s decoders use `prefsize=0`; ordering and
   concealment are the room's jitter buffers' job, downstream.
3. `VoiceRecvClient.listen()` always builds voice_recv's own reader: `install_reader` puts
   ours where the voice websocket hook and the SSRC mapping look for it (`vc._reader`).
4. `AudioReader.stop()` ends its threads without joining them: `join_reader` joins them.
5. davey raising inside discord.py's MLS handlers (`DiscordVoiceWebSocket.
   received_binary_message`, e.g. a second external sender) is not caught: the voice
   websocket task (`VoiceConnectionState._runner`) ends while `is_connected()` stays True.
   `dead_voice_websocket` tells.
6. A disconnect can leave discord.py's voice tasks running (e.g. `_potential_reconnect`
   waiting for a handshake that the stopped socket reader will never complete): `reap`.
7. `VoiceClient.move_to()` stalls in a quiet call: after a move the socket reader keeps waiting
   on the old UDP socket (`select()` with a 30 s timeout) while the new connection's IP
   discovery waits for it. Nothing here calls `move_to`; `VoiceLink` goes back to its channel
   with a fresh connection instead.
8. voice_recv's `SpeakingTimer` sets a `threading.Event` for every received packet, waking
   its thread 50 times a second per speaker, only to time `voice_member_speaking_start/stop`
   sink events that nothing here listens to (speaking state comes from the packets, in the
   bridge): ~13 % of the service's CPU with two Discord speakers (bench/RESULTS.md, issue 14).
   `ReceiveReader` replaces it with a no-op that never starts a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import davey
from discord.ext import voice_recv
from discord.ext.voice_recv.buffer import HeapJitterBuffer
from discord.ext.voice_recv.opus import PacketDecoder
from discord.ext.voice_recv.reader import AudioReader
from discord.ext.voice_recv.router import PacketRouter

__all__ = [
    "DaveState",
    "DeadWebsocket",
    "ReceiveReader",
    "dave_state",
    "dead_voice_websocket",
    "install_reader",
    "join_reader",
    "player_thread",
    "reap",
    "remove_reader",
    "rtp_timestamp",
    "set_rtp_timestamp",
    "user_id_of_ssrc",
]

logger = logging.getLogger(__name__)

JOIN_POLL_S = 0.05
"""Between nudges of voice_recv's speaking timer while joining the reader's threads."""


# -- DAVE state (discord.py's VoiceConnectionState) -------------------------------------------


@dataclass(frozen=True, slots=True)
class DaveState:
    """The connection's DAVE session as discord.py keeps it; read afresh for every frame."""

    session: davey.DaveSession | None
    """None before discord.py created one (or on a call that never used DAVE)."""
    protocol_version: int
    """0 when the call is not (or no longer) end-to-end encrypted."""


def dave_state(vc: voice_recv.VoiceRecvClient) -> DaveState:
    connection = vc._connection
    return DaveState(connection.dave_session, connection.dave_protocol_version)


# -- voice_recv's reader ----------------------------------------------------------------------


class _NoKeepAlive:
    """Stands in for voice_recv's `UDPKeepAlive` (workaround 1)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _NoSpeakingTimer:
    """Stands in for voice_recv's `SpeakingTimer` (workaround 8): no thread, no events."""

    def start(self) -> None:
        pass

    def notify(self, ssrc: int | None = None) -> None:
        pass

    def drop_ssrc(self, ssrc: int) -> None:
        pass

    def get_speaking(self, ssrc: int) -> bool | None:
        return None

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        pass


class ReceiveReader(AudioReader):
    """voice_recv's reader without the keepalive thread and the speaking timer, with prompt
    decoders (workarounds 1, 2, 8)."""

    def __init__(
        self,
        sink: voice_recv.AudioSink,
        vc: voice_recv.VoiceRecvClient,
        *,
        after: Callable[[Exception | None], Any],
    ) -> None:
        super().__init__(sink, vc, after=after)
        self.keepalive = _NoKeepAlive()  # type: ignore[assignment]
        self.speaking_timer = _NoSpeakingTimer()  # type: ignore[assignment]
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


def install_reader(vc: voice_recv.VoiceRecvClient, reader: ReceiveReader) -> None:
    """Make `reader` the one `vc` routes to, and start it (workaround 3)."""
    vc._reader = reader
    reader.start()


def remove_reader(vc: voice_recv.VoiceRecvClient | None, reader: ReceiveReader) -> None:
    """Stop `reader`; unhook it from `vc` if it is still the installed one."""
    if vc is not None and vc._reader is reader:
        vc.stop_listening()  # stops it and clears vc._reader
    elif reader.is_listening():
        reader.stop()


def join_reader(reader: ReceiveReader, timeout_s: float) -> None:
    """Wait (blocking: run it in a thread) for a stopped reader's threads (workaround 4)."""
    threads: list[threading.Thread] = [reader.packet_router, reader.event_router]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(JOIN_POLL_S)
        if thread.is_alive():
            logger.warning("voice_recv thread %s did not end within %.1f s", thread.name, timeout_s)


def user_id_of_ssrc(vc: voice_recv.VoiceRecvClient, ssrc: int) -> int | None:
    """The user SPEAKING (op 5) mapped `ssrc` to, if it has."""
    return vc._get_id_from_ssrc(ssrc)


# -- discord.py's voice client ----------------------------------------------------------------


def player_thread(vc: voice_recv.VoiceRecvClient) -> threading.Thread | None:
    """The thread `vc.play()` started (still set after it ended), to join after stopping it."""
    return vc._player


def rtp_timestamp(vc: voice_recv.VoiceRecvClient) -> int:
    """The RTP timestamp `vc.send_audio_packet` gives the next packet."""
    return vc.timestamp


def set_rtp_timestamp(*, vc: voice_recv.VoiceRecvClient, timestamp: int) -> None:
    """Move the send clock on after a pause: discord.py only counts packets it sent. Call it
    on the player thread (between reads), which alone advances the timestamp."""
    vc.timestamp = timestamp & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class DeadWebsocket:
    error: BaseException | None
    """What ended the voice websocket task (None: it was cancelled or returned)."""


def dead_voice_websocket(vc: voice_recv.VoiceRecvClient) -> DeadWebsocket | None:
    """The voice websocket task has ended although nobody disconnected (workaround 5)."""
    runner: asyncio.Task[Any] | None = vc._connection._runner
    if runner is None or not runner.done():
        return None
    return DeadWebsocket(None if runner.cancelled() else runner.exception())


def reap(vc: voice_recv.VoiceRecvClient) -> None:
    """Cancel what discord.py left running for a voice client it disconnected (workaround 6)."""
    connection = vc._connection
    for task in (connection._runner, connection._connector):
        if task is not None and not task.done():
            task.cancel()
