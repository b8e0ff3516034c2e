"""One bot's voice websocket (gateway v8) and its UDP media, as a Discord voice server sees it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.exceptions
from aiohttp import WSMsgType, web

from .rtp import RtpPacket, TransportCipher

if TYPE_CHECKING:
    from .voice_call import VoiceCall
    from .voice_gateway import VoiceGateway

__all__ = ["BotVoiceSession", "ReceivedFrame", "VoiceOp"]

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 13_750
# Discord lists AES-GCM first; discord.py 2.7.1 does not support it and must skip it.
ADVERTISED_MODES = ["aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"]
IMPLEMENTED_MODE = "aead_xchacha20_poly1305_rtpsize"
DAVE_MAGIC = b"\xfa\xfa"  # last two bytes of every DAVE frame


class VoiceOp(enum.IntEnum):
    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    CLIENT_DISCONNECT = 13
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_PREPARE_EPOCH = 24
    MLS_EXTERNAL_SENDER = 25
    MLS_KEY_PACKAGE = 26
    MLS_PROPOSALS = 27
    MLS_COMMIT_WELCOME = 28
    MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    MLS_WELCOME = 30
    MLS_INVALID_COMMIT_WELCOME = 31


class VoiceClose(enum.IntEnum):
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    SESSION_NO_LONGER_VALID = 4006
    DISCONNECTED = 4014
    UNKNOWN_ENCRYPTION_MODE = 4016
    E2EE_REQUIRED = 4017


class _State(enum.Enum):
    CONNECTED = "connected"
    IDENTIFIED = "identified"
    SESSION = "session"  # SESSION_DESCRIPTION sent: media may flow
    CLOSED = "closed"


@dataclass(frozen=True)
class ReceivedFrame:
    """One RTP packet the bot sent, with both encryption layers peeled where possible."""

    sequence: int
    timestamp: int
    ssrc: int
    raw: bytes  # the UDP datagram as received
    payload: bytes | None  # after transport decryption: a DAVE frame or plain Opus
    opus: bytes | None  # after DAVE decryption (== payload when the frame was not DAVE)
    dave_encrypted: bool
    error: str | None = None


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class BotVoiceSession:
    """Speaks voice gateway v8 to one discord.py `VoiceClient` and is its DAVE participant."""

    def __init__(self, gateway: VoiceGateway, ws: web.WebSocketResponse) -> None:
        self._gateway = gateway
        self._ws = ws
        self._state = _State.CONNECTED
        self._outbox: asyncio.Queue[str | bytes | _Close] = asyncio.Queue()
        self._seq = 0
        self._cipher: TransportCipher | None = None
        self._udp_addr: tuple[str, int] | None = None
        self.user_id = 0
        self.guild_id = 0
        self.channel_id = 0
        self.ssrc = 0
        self.mode = ""
        self.speaking = 0
        self.max_dave_protocol_version = 0
        self.call: VoiceCall | None = None
        self.frames: asyncio.Queue[ReceivedFrame] = asyncio.Queue()
        self.described = asyncio.Event()
        self.closed = asyncio.Event()
        self._close_timer: asyncio.TimerHandle | None = None

    # -- test-side -------------------------------------------------------------------------

    async def next_frame(self, timeout: float = 5.0) -> ReceivedFrame:
        async with asyncio.timeout(timeout):
            return await self.frames.get()

    async def next_opus(self, timeout: float = 5.0, *, skip_silence: bool = True) -> bytes:
        """The next Opus packet the bot sent that both layers let through."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame.opus is None or (skip_silence and frame.opus == b"\xf8\xff\xfe"):
                    continue
                return frame.opus

    def drain_frames(self) -> list[ReceivedFrame]:
        """Everything received and not yet read, e.g. to start counting afresh."""
        frames = []
        while not self.frames.empty():
            frames.append(self.frames.get_nowait())
        return frames

    def close(
        self, code: int = VoiceClose.DISCONNECTED, reason: str = "", *, after: float = 0.0
    ) -> None:
        """Close the websocket, now or `after` seconds (if the client has not closed it)."""
        if after <= 0:
            self._outbox.put_nowait(_Close(code, reason))
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = asyncio.get_running_loop().call_later(
            after, self._outbox.put_nowait, _Close(code, reason)
        )

    # -- connection ------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name=f"voice-ws-writer-{id(self):x}")
        try:
            self._send_json(VoiceOp.HELLO, {"v": 8, "heartbeat_interval": HEARTBEAT_INTERVAL_MS})
            async for msg in self._ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_json(json.loads(msg.data))
                elif msg.type is WSMsgType.BINARY:
                    self._on_binary(msg.data)
        finally:
            self._state = _State.CLOSED
            if self._close_timer is not None:
                self._close_timer.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._leave()
            self.closed.set()

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Close):
                await self._ws.close(code=item.code, message=item.reason.encode())
                return
            if isinstance(item, bytes):
                await self._ws.send_bytes(item)
            else:
                await self._ws.send_str(item)

    def _leave(self) -> None:
        if self.ssrc:
            self._gateway.udp.unregister(self.ssrc)
        if self.call is not None:
            self.call.remove_bot(self)
            self.call = None
        self._gateway.forget(self)

    def _send_json(self, op: VoiceOp, data: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"op": int(op), "d": data}
        if op not in (VoiceOp.HELLO, VoiceOp.HEARTBEAT_ACK):
            # v8 numbers what can be replayed on resume; clients echo it as seq_ack.
            self._seq = (self._seq + 1) & 0xFFFF
            payload["seq"] = self._seq
        self._outbox.put_nowait(json.dumps(payload))

    def _send_binary(self, op: VoiceOp, payload: bytes) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self._outbox.put_nowait(struct.pack(">HB", self._seq, op) + payload)

    # -- inbound ---------------------------------------------------------------------------

    def _on_json(self, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d") or {}
        if op == VoiceOp.HEARTBEAT:
            self._send_json(VoiceOp.HEARTBEAT_ACK, {"t": data.get("t")})
        elif op == VoiceOp.IDENTIFY:
            self._on_identify(data)
        elif op == VoiceOp.RESUME:
            # Not implemented. discord.py resumes only after a 4015 and then repeats RESUME on
            # each of its five attempts (voice_state.py, _inner_connect), so this ends the call.
            self.close(VoiceClose.SESSION_NO_LONGER_VALID, "resume not supported by the fake")
        elif self._state is _State.CONNECTED:
            self.close(VoiceClose.NOT_AUTHENTICATED, "not authenticated")
        elif op == VoiceOp.SELECT_PROTOCOL:
            self._on_select_protocol(data)
        elif op == VoiceOp.SPEAKING:
            self.speaking = int(data.get("speaking", 0))
        elif op == VoiceOp.DAVE_TRANSITION_READY and self.call is not None:
            self.call.dave.transition_ready(self, int(data["transition_id"]))
        elif op == VoiceOp.MLS_INVALID_COMMIT_WELCOME and self.call is not None:
            self.call.dave.invalid_commit_welcome(self, int(data["transition_id"]))
        else:
            _log.debug("voice op %s from the bot ignored", op)

    def _on_binary(self, data: bytes) -> None:
        if self.call is None or not data:
            return
        op, payload = data[0], data[1:]
        if op == VoiceOp.MLS_KEY_PACKAGE:
            self.call.dave.key_package(self, payload)
        elif op == VoiceOp.MLS_COMMIT_WELCOME:
            self.call.dave.commit_welcome(self, payload)
        else:
            _log.warning("unexpected binary voice op %d from the bot", op)

    def _on_identify(self, data: dict[str, Any]) -> None:
        grant = self._gateway.grant_for(int(data["server_id"]), int(data["user_id"]))
        if grant is None or grant.token != data.get("token"):
            self.close(VoiceClose.AUTHENTICATION_FAILED, "authentication failed")
            return
        if grant.session_id != data.get("session_id"):
            self.close(VoiceClose.SESSION_NO_LONGER_VALID, "session is no longer valid")
            return
        self.max_dave_protocol_version = int(data.get("max_dave_protocol_version", 0))
        if self._gateway.dave_protocol_version > self.max_dave_protocol_version:
            self.close(VoiceClose.E2EE_REQUIRED, "E2EE/DAVE protocol required")
            return
        self.user_id, self.guild_id, self.channel_id = (
            grant.user_id,
            grant.guild_id,
            grant.channel_id,
        )
        self.ssrc = self._gateway.allocate_ssrc()
        self._gateway.udp.register(self.ssrc, self)
        self._state = _State.IDENTIFIED
        self._send_json(
            VoiceOp.READY,
            {
                "ssrc": self.ssrc,
                "ip": "127.0.0.1",
                "port": self._gateway.udp.port,
                "modes": ADVERTISED_MODES,
                "experiments": [],
                "streams": [],
            },
        )

    def _on_select_protocol(self, data: dict[str, Any]) -> None:
        details = data.get("data") or {}
        mode = details.get("mode", "")
        if mode != IMPLEMENTED_MODE:
            self.close(VoiceClose.UNKNOWN_ENCRYPTION_MODE, f"unknown encryption mode {mode}")
            return
        self.mode = mode
        if self._udp_addr is None:
            self._udp_addr = (details["address"], int(details["port"]))
        secret_key = os.urandom(32)
        self._cipher = TransportCipher(secret_key)
        self.call = self._gateway.call(self.guild_id, self.channel_id)
        self._send_json(
            VoiceOp.SESSION_DESCRIPTION,
            {
                "mode": mode,
                "secret_key": list(secret_key),
                "audio_codec": "opus",
                "video_codec": "H264",
                "media_session_id": os.urandom(16).hex(),
                "dave_protocol_version": self.call.dave.protocol_version,
            },
        )
        self._state = _State.SESSION
        self.call.add_bot(self)
        self.described.set()
        self._gateway.session_changed()

    # -- DaveParticipant -------------------------------------------------------------------

    def send_external_sender(self, package: bytes) -> None:
        self._send_binary(VoiceOp.MLS_EXTERNAL_SENDER, package)

    def send_proposals(self, proposals: bytes) -> None:
        self._send_binary(VoiceOp.MLS_PROPOSALS, b"\x00" + proposals)  # 0 = append

    def send_announce_commit(self, transition_id: int, commit: bytes) -> None:
        self._send_binary(
            VoiceOp.MLS_ANNOUNCE_COMMIT_TRANSITION, struct.pack(">H", transition_id) + commit
        )

    def send_welcome(self, transition_id: int, welcome: bytes) -> None:
        self._send_binary(VoiceOp.MLS_WELCOME, struct.pack(">H", transition_id) + welcome)

    def send_prepare_transition(self, transition_id: int, protocol_version: int) -> None:
        self._send_json(
            VoiceOp.DAVE_PREPARE_TRANSITION,
            {"transition_id": transition_id, "protocol_version": protocol_version},
        )

    def send_execute_transition(self, transition_id: int) -> None:
        self._send_json(VoiceOp.DAVE_EXECUTE_TRANSITION, {"transition_id": transition_id})

    def send_prepare_epoch(self, epoch: int, protocol_version: int) -> None:
        self._send_json(
            VoiceOp.DAVE_PREPARE_EPOCH, {"epoch": epoch, "protocol_version": protocol_version}
        )

    # -- what the call relays --------------------------------------------------------------

    def send_clients_connect(self, user_ids: list[int]) -> None:
        self._send_json(VoiceOp.CLIENTS_CONNECT, {"user_ids": [str(u) for u in user_ids]})

    def send_client_disconnect(self, user_id: int) -> None:
        self._send_json(VoiceOp.CLIENT_DISCONNECT, {"user_id": str(user_id)})

    def send_speaking(self, user_id: int, ssrc: int, *, speaking: bool) -> None:
        self._send_json(
            VoiceOp.SPEAKING, {"user_id": str(user_id), "ssrc": ssrc, "speaking": int(speaking)}
        )

    def send_rtp(self, packet: RtpPacket) -> None:
        if self._cipher is None or self._udp_addr is None:
            return
        self._gateway.udp.sendto(self._cipher.encrypt(packet), self._udp_addr)

    def send_udp(self, data: bytes) -> None:
        if self._udp_addr is not None:
            self._gateway.udp.sendto(data, self._udp_addr)

    # -- RtpReceiver -----------------------------------------------------------------------

    def on_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        self._udp_addr = addr  # where the client really sends from is where it listens
        if self._cipher is None:
            return
        sequence, timestamp = struct.unpack_from(">HI", data, 2)
        try:
            packet = self._cipher.decrypt(data)
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            self.frames.put_nowait(
                ReceivedFrame(
                    sequence, timestamp, self.ssrc, data, None, None, False, f"transport: {exc}"
                )
            )
            return
        payload = packet.payload
        if not payload.endswith(DAVE_MAGIC):
            self.frames.put_nowait(
                ReceivedFrame(sequence, timestamp, self.ssrc, data, payload, payload, False)
            )
            return
        listener = self.call.listener_for(self.user_id) if self.call is not None else None
        if listener is None:
            error: str | None = "dave: no fake user in the group to decrypt with"
            opus = None
        else:
            try:
                opus, error = listener.dave_decrypt(self.user_id, payload), None
            except ValueError as exc:
                opus, error = None, f"dave: {exc}"
        self.frames.put_nowait(
            ReceivedFrame(sequence, timestamp, self.ssrc, data, payload, opus, True, error)
        )
