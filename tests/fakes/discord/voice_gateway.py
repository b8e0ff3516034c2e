"""The fake voice server: a TLS websocket endpoint (v8), one UDP socket and the calls."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web

from .dave import DaveCoordinator
from .mls import ExternalSender
from .tls import SelfSignedCertificate
from .voice_call import VoiceCall
from .voice_session import BotVoiceSession, VoiceClose
from .voice_udp import VoiceUdp

__all__ = ["VoiceGateway", "VoiceGrant"]

_log = logging.getLogger(__name__)

KICK_CLOSE_DELAY_S = 1.0


@dataclass(frozen=True)
class VoiceGrant:
    """What VOICE_SERVER_UPDATE handed a bot: the voice IDENTIFY must match it."""

    guild_id: int
    user_id: int
    channel_id: int
    session_id: str
    token: str


class VoiceGateway:
    def __init__(self, *, dave_protocol_version: int, certificate: SelfSignedCertificate) -> None:
        self.dave_protocol_version = dave_protocol_version
        self.external_sender = ExternalSender()
        self._certificate = certificate
        self._grants: dict[tuple[int, int], VoiceGrant] = {}
        self._calls: dict[int, VoiceCall] = {}
        self._sessions: list[BotVoiceSession] = []
        # Replaced on every change; waiters hold the old one, which is set (sync-friendly).
        self._sessions_changed = asyncio.Event()
        self._ssrcs = itertools.count(1001)
        self._runner: web.AppRunner | None = None
        self._udp: VoiceUdp | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> None:
        self._udp = await VoiceUdp.open(host)
        app = web.Application()
        app.router.add_get("/", self._handle_ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0, ssl_context=self._certificate.server_context())
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for session in list(self._sessions):
            session.close(1001, "fake shutting down")
        for call in self._calls.values():
            await call.dave.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    @property
    def endpoint(self) -> str:
        """What VOICE_SERVER_UPDATE carries: host:port, no scheme (as Discord sends it)."""
        return f"127.0.0.1:{self.port}"

    @property
    def udp(self) -> VoiceUdp:
        assert self._udp is not None, "voice gateway not started"
        return self._udp

    def grant(self, guild_id: int, user_id: int, channel_id: int, session_id: str) -> VoiceGrant:
        grant = VoiceGrant(guild_id, user_id, channel_id, session_id, secrets.token_hex(8))
        self._grants[(guild_id, user_id)] = grant
        return grant

    def grant_for(self, guild_id: int, user_id: int) -> VoiceGrant | None:
        return self._grants.get((guild_id, user_id))

    def revoke(self, guild_id: int, user_id: int, *, close: bool) -> None:
        """The user left voice; with `close`, also drop its voice websocket (Discord's 4014).

        The close waits a moment: discord.py reacts to the VOICE_STATE_UPDATE by closing the
        socket itself, and a 4014 that overtakes it sends discord.py's `_poll_voice_ws` into
        `_potential_reconnect`, whose `_wait_for_state` can miss the state change and then
        hangs for its 30 s timeout (voice_state.py)."""
        self._grants.pop((guild_id, user_id), None)
        if close:
            for session in self._sessions:
                if (session.guild_id, session.user_id) == (guild_id, user_id):
                    session.close(VoiceClose.DISCONNECTED, "disconnected", after=KICK_CLOSE_DELAY_S)

    def call(self, guild_id: int, channel_id: int) -> VoiceCall:
        call = self._calls.get(channel_id)
        if call is None:
            dave = DaveCoordinator(channel_id, self.dave_protocol_version, self.external_sender)
            dave.start()
            call = self._calls[channel_id] = VoiceCall(guild_id, channel_id, dave)
        return call

    def allocate_ssrc(self) -> int:
        return next(self._ssrcs)

    async def wait_for_session(
        self, guild_id: int, user_id: int, timeout: float = 10.0
    ) -> BotVoiceSession:
        """The bot's voice session in `guild_id` once SESSION_DESCRIPTION has been sent."""

        def find() -> BotVoiceSession | None:
            for session in self._sessions:
                if (session.guild_id, session.user_id) == (
                    guild_id,
                    user_id,
                ) and session.described.is_set():
                    return session
            return None

        async with asyncio.timeout(timeout):
            while (session := find()) is None:
                await self._sessions_changed.wait()
        return session

    def session_changed(self) -> None:
        self._sessions_changed.set()
        self._sessions_changed = asyncio.Event()

    def forget(self, session: BotVoiceSession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
        self.session_changed()

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("v") != "8":
            _log.warning(
                "voice websocket opened with v=%s; the fake speaks v8", request.query.get("v")
            )
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = BotVoiceSession(self, ws)
        self._sessions.append(session)
        await session.run()
        return ws
