"""The main gateway (v10): HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME, dispatch.

Events are filtered by the client's intents as Discord does, so a bot that forgets an intent
sees here what it would see in production (e.g. no VOICE_STATE_UPDATE, so voice never connects).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .state import FakeGuild, FakeWorld

__all__ = ["Gateway", "GatewayHandler", "GatewaySession", "Intent"]

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
RESUME_BUFFER_EVENTS = 1_000


class Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class Close(enum.IntEnum):
    UNKNOWN_OPCODE = 4001
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_VOICE_STATES = 1 << 7
    GUILD_MESSAGES = 1 << 9


# Which intent an event needs; events not listed are always sent (READY, INTERACTION_CREATE…).
EVENT_INTENTS: dict[str, Intent] = {
    "GUILD_CREATE": Intent.GUILDS,
    "GUILD_DELETE": Intent.GUILDS,
    "CHANNEL_CREATE": Intent.GUILDS,
    "CHANNEL_DELETE": Intent.GUILDS,
    "GUILD_MEMBER_ADD": Intent.GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": Intent.GUILD_MEMBERS,
    "VOICE_STATE_UPDATE": Intent.GUILD_VOICE_STATES,
    "MESSAGE_CREATE": Intent.GUILD_MESSAGES,
}


class GatewayHandler(Protocol):
    """What the gateway cannot decide alone (the composition root answers)."""

    def on_voice_state_request(self, session: GatewaySession, data: dict[str, Any]) -> None: ...


@dataclass
class GatewaySession:
    """A logical gateway session: survives its websocket for RESUME."""

    session_id: str
    intents: int
    seq: int = 0
    sent: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=RESUME_BUFFER_EVENTS))
    connection: _Connection | None = None

    def wants(self, event: str) -> bool:
        needed = EVENT_INTENTS.get(event)
        return needed is None or bool(self.intents & needed)

    def dispatch(self, event: str, data: Any) -> None:
        if not self.wants(event):
            return
        self.seq += 1
        frame = json.dumps({"op": Op.DISPATCH, "t": event, "s": self.seq, "d": data})
        self.sent.append((self.seq, frame))
        if self.connection is not None:
            self.connection.send(frame)


class _Connection:
    """One gateway websocket. A single writer task owns the socket."""

    def __init__(self, ws: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.ws = ws
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self._zlib = zlib.compressobj() if zlib_stream else None
        self._outbox: asyncio.Queue[str | tuple[int, str]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name=f"gateway-writer-{id(self):x}")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def send(self, frame: str) -> None:
        self._outbox.put_nowait(frame)

    def send_op(self, op: Op, data: Any) -> None:
        self.send(json.dumps({"op": op, "t": None, "s": None, "d": data}))

    def close(self, code: int, reason: str = "") -> None:
        self._outbox.put_nowait((code, reason))

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, tuple):
                await self.ws.close(code=item[0], message=item[1].encode())
                return
            if self._zlib is None:
                await self.ws.send_str(item)
            else:
                # zlib-stream: one shared deflate context, each message ends in a sync flush.
                data = self._zlib.compress(item.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)


class Gateway:
    def __init__(self, world: FakeWorld, token: str, handler: GatewayHandler) -> None:
        self._world = world
        self._token = token
        self._handler = handler
        self._sessions: dict[str, GatewaySession] = {}
        self._connections: set[_Connection] = set()
        self._identified = asyncio.Event()
        self.url = ""  # ws://host:port/ once the server listens; READY's resume_gateway_url

    # -- test-side -------------------------------------------------------------------------

    @property
    def sessions(self) -> list[GatewaySession]:
        return list(self._sessions.values())

    @property
    def primary(self) -> GatewaySession | None:
        """Where Discord would route an interaction: the newest session with a live socket."""
        live = [s for s in self._sessions.values() if s.connection is not None]
        return (live or list(self._sessions.values()) or [None])[-1]

    async def wait_identified(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._identified.wait()

    def dispatch(
        self, event: str, data: Any, *, only: Callable[[GatewaySession], bool] | None = None
    ) -> None:
        """Send a DISPATCH to every session (that wants it, and matches `only`)."""
        for session in self._sessions.values():
            if only is None or only(session):
                session.dispatch(event, data)

    def drop_connections(self, code: int = 4000) -> None:
        """Close every websocket with a resumable code; the sessions stay for RESUME."""
        for connection in list(self._connections):
            connection.close(code, "dropped by test")

    async def close(self) -> None:
        for connection in list(self._connections):
            connection.close(1001, "fake shutting down")

    # -- websocket -------------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = _Connection(ws, zlib_stream=request.query.get("compress") == "zlib-stream")
        self._connections.add(connection)
        connection.start()
        connection.send_op(Op.HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_message(connection, json.loads(msg.data))
        finally:
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            self._connections.discard(connection)
            await connection.stop()
        return ws

    def _on_message(self, connection: _Connection, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d")
        if op == Op.HEARTBEAT:
            connection.heartbeats += 1
            connection.send_op(Op.HEARTBEAT_ACK, None)
        elif op == Op.IDENTIFY:
            self._identify(connection, data)
        elif op == Op.RESUME:
            self._resume(connection, data)
        elif connection.session is None:
            connection.close(Close.NOT_AUTHENTICATED, "Not authenticated.")
        elif op == Op.VOICE_STATE_UPDATE:
            self._handler.on_voice_state_request(connection.session, data)
        elif op == Op.REQUEST_GUILD_MEMBERS:
            self._send_member_chunks(connection.session, data)
        elif op == Op.PRESENCE_UPDATE:
            pass  # nobody watches the bot's presence here
        else:
            connection.close(Close.UNKNOWN_OPCODE, "Unknown opcode.")

    def _identify(self, connection: _Connection, data: dict[str, Any]) -> None:
        if connection.session is not None:
            connection.close(Close.ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if data.get("token") != self._token:
            connection.close(Close.AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = GatewaySession(secrets.token_hex(16), int(data.get("intents", 0)))
        self._sessions[session.session_id] = session
        session.connection = connection
        connection.session = session
        bot = self._world.bot
        session.dispatch(
            "READY",
            {
                "v": 10,
                "user": bot.to_me_payload(),
                "guilds": [{"id": str(g), "unavailable": True} for g in self._world.guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.url,
                "shard": data.get("shard", [0, 1]),
                "application": {"id": str(bot.id), "flags": 0},
                "private_channels": [],
                "presences": [],
                "relationships": [],
                "user_settings": {},
                "geo_ordered_rtc_regions": ["fake"],
                "guild_join_requests": [],
            },
        )
        for guild in self._world.guilds.values():
            session.dispatch("GUILD_CREATE", self._guild_create(session, guild))
        self._identified.set()

    def _guild_create(self, session: GatewaySession, guild: FakeGuild) -> dict[str, Any]:
        payload = guild.to_create_payload()
        if not session.intents & Intent.GUILD_VOICE_STATES:
            payload["voice_states"] = []
        if not session.intents & Intent.GUILD_MEMBERS:
            # Without the members intent Discord sends the bot and members in voice only.
            keep = {self._world.bot.id} | {s.user_id for s in guild.voice_states.values()}
            payload["members"] = [m for m in payload["members"] if int(m["user"]["id"]) in keep]
        return payload

    def _resume(self, connection: _Connection, data: dict[str, Any]) -> None:
        session = self._sessions.get(data.get("session_id", ""))
        seq = data.get("seq") or 0
        if (
            data.get("token") != self._token
            or session is None
            or (session.sent and session.sent[0][0] > seq + 1)
        ):
            connection.send_op(Op.INVALID_SESSION, False)
            return
        session.connection = connection
        connection.session = session
        for event_seq, frame in session.sent:
            if event_seq > seq:
                connection.send(frame)
        session.dispatch("RESUMED", {})

    def _send_member_chunks(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self._world.guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            m.to_payload()
            for m in guild.members.values()
            if (not wanted or m.id in wanted) and m.user.username.lower().startswith(query)
        ]
        limit = data.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
