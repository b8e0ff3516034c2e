"""`FakeDiscord`: REST + gateway on one plain HTTP port, the voice gateway on a TLS port, voice
UDP on a third; all on 127.0.0.1 with ports the OS picks."""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from .commands import CommandRegistry
from .dave import DaveCoordinator
from .gateway import Gateway, GatewaySession
from .interactions import InteractionHandle, InteractionRegistry, InteractionReply
from .options import OptionValue
from .rest import API_PREFIX, RestApi
from .state import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser, FakeVoiceState, FakeWorld
from .tls import SelfSignedCertificate
from .voice_call import VoiceCall
from .voice_gateway import VoiceGateway
from .voice_session import BotVoiceSession
from .voice_user import FakeVoiceUser

__all__ = ["FakeDiscord"]

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT_S = 2.0


class FakeDiscord:
    """A protocol-level Discord for one bot. Build guilds before the bot connects::

    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test")
        voice = guild.add_voice_channel("General")
        with fake.patch_discord():
            client = discord.Client(intents=..., connector=fake.connector())
            ...
    """

    def __init__(
        self,
        *,
        dave_protocol_version: int = 1,
        bot_name: str = "switchboard",
        interaction_ack_deadline_s: float = 3.0,
    ) -> None:
        self.token = f"fake.{secrets.token_urlsafe(24)}"
        self.world = FakeWorld(bot_name)
        self.certificate = SelfSignedCertificate()
        self.commands = CommandRegistry(self.world.bot.id, self.world.ids)
        self.interactions = InteractionRegistry(
            self.world, self.commands, ack_deadline_s=interaction_ack_deadline_s
        )
        self.rest = RestApi(self.world, self.token, self.commands, self.interactions)
        self.gateway = Gateway(self.world, self.token, self)
        self.voice = VoiceGateway(
            dave_protocol_version=dave_protocol_version, certificate=self.certificate
        )
        self._voice_users: dict[tuple[int, int], FakeVoiceUser] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        self.rest.add_routes(app)
        app.router.add_get("/", self.gateway.handle_ws)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.port = self._runner.addresses[0][1]
        self.gateway.url = self.rest.gateway_url = self.gateway_url
        await self.voice.start(HOST)
        _log.info(
            "fake Discord: REST %s, gateway %s, voice %s",
            self.api_base,
            self.gateway_url,
            self.voice.endpoint,
        )

    async def close(self) -> None:
        await self.gateway.close()
        await self.voice.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- pointing discord.py here ----------------------------------------------------------

    @property
    def bot(self) -> FakeUser:
        return self.world.bot

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the fake's self-signed voice certificate (and nothing else)."""
        return self.certificate.client_context()

    def connector(self) -> aiohttp.TCPConnector:
        """For `discord.Client(connector=...)`; call inside the running loop. The voice
        websocket is `wss://` and must verify against the fake's certificate."""
        return aiohttp.TCPConnector(limit=0, ssl=self.ssl_context())

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's class-level endpoints here (REST base, default gateway)."""
        route_base = discord.http.Route.BASE
        default_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = route_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = default_gateway

    # -- building the world ----------------------------------------------------------------

    def add_guild(self, name: str, *, owner: FakeUser | None = None) -> FakeGuild:
        return self.world.add_guild(name, owner=owner)

    def add_user(self, username: str) -> FakeUser:
        return self.world.add_user(username)

    def add_member(
        self, guild: FakeGuild, username: str, *, roles: list[FakeRole] | None = None
    ) -> FakeMember:
        """A new user who is a member of `guild` (with `roles` on top of @everyone)."""
        return guild.add_member(self.world.add_user(username), roles)

    # -- gateway events --------------------------------------------------------------------

    async def user_joins_voice(
        self, guild: FakeGuild, user: FakeUser | FakeMember, channel: FakeChannel
    ) -> FakeVoiceUser:
        """`user` connects to `channel`: VOICE_STATE_UPDATE, and a fake client in the call
        (op 11 to the bots there, and its own DAVE session joining the group)."""
        user = user.user if isinstance(user, FakeMember) else user
        if not channel.is_voice:
            raise ValueError(f"{channel.name} is not a voice channel")
        if (guild.id, user.id) in self._voice_users:
            await self.user_leaves_voice(guild, user)
        state = FakeVoiceState(user.id, channel.id, secrets.token_hex(16))
        guild.voice_states[user.id] = state
        self.gateway.dispatch(
            "VOICE_STATE_UPDATE", state.to_payload(guild.id, guild.members.get(user.id))
        )
        call = self.voice.call(guild.id, channel.id)
        voice_user = FakeVoiceUser(user, self.voice.allocate_ssrc(), call)
        self._voice_users[(guild.id, user.id)] = voice_user
        call.add_user(voice_user)
        return voice_user

    async def user_leaves_voice(self, guild: FakeGuild, user: FakeUser | FakeMember) -> None:
        """`user` disconnects. For the bot this is a server-side kick: VOICE_STATE_UPDATE with
        no channel and its voice websocket closed with 4014."""
        user = user.user if isinstance(user, FakeMember) else user
        state = guild.voice_states.pop(user.id, None)
        session_id = state.session_id if state else secrets.token_hex(16)
        left = FakeVoiceState(user.id, None, session_id)
        self.gateway.dispatch(
            "VOICE_STATE_UPDATE", left.to_payload(guild.id, guild.members.get(user.id))
        )
        if user.id == self.bot.id:
            self.voice.revoke(guild.id, user.id, close=True)
            return
        voice_user = self._voice_users.pop((guild.id, user.id), None)
        if voice_user is not None:
            voice_user.call.remove_user(voice_user)

    async def send_interaction(
        self,
        guild: FakeGuild,
        channel: FakeChannel,
        user: FakeUser | FakeMember,
        command_name: str,
        options: dict[str, OptionValue] | None = None,
        *,
        subcommand: str | None = None,
        group: str | None = None,
        focused: str | None = None,
    ) -> InteractionHandle:
        """A user runs `/command_name [group] [subcommand] options...` (a synced command);
        with `focused`, the user is typing that option and Discord asks for autocomplete
        (`(await handle.response()).choices`)."""
        user = user.user if isinstance(user, FakeMember) else user
        handle, payload = self.interactions.create(
            guild,
            channel,
            user,
            command_name,
            options,
            subcommand=subcommand,
            group=group,
            focused=focused,
        )
        primary = self.gateway.primary
        if primary is None:
            raise RuntimeError("no bot is connected to the gateway")
        primary.dispatch("INTERACTION_CREATE", payload)
        return handle

    async def next_interaction_reply(self, timeout: float = 5.0) -> InteractionReply:
        """Any interaction's next recorded response, edit, follow-up or delete."""
        return await self.interactions.next_reply(timeout)

    def dispatch(self, event: str, data: Any) -> None:
        """Any other gateway event, as is, to every session that wants it."""
        self.gateway.dispatch(event, data)

    # -- voice -----------------------------------------------------------------------------

    async def bot_voice(self, guild: FakeGuild, timeout: float = 10.0) -> BotVoiceSession:
        """The bot's voice connection in `guild` once it has its SESSION_DESCRIPTION."""
        return await self.voice.wait_for_session(guild.id, self.bot.id, timeout)

    def voice_call(self, channel: FakeChannel) -> VoiceCall:
        return self.voice.call(channel.guild_id, channel.id)

    def dave(self, channel: FakeChannel) -> DaveCoordinator:
        return self.voice_call(channel).dave

    # -- GatewayHandler --------------------------------------------------------------------

    def on_voice_state_request(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.world.guilds.get(int(data["guild_id"]))
        if guild is None:
            _log.warning("op 4 for unknown guild %s", data["guild_id"])
            return
        bot = self.bot
        channel_id = data.get("channel_id")
        if channel_id is None:
            guild.voice_states.pop(bot.id, None)
            left = FakeVoiceState(bot.id, None, session.session_id)
            self.gateway.dispatch(
                "VOICE_STATE_UPDATE", left.to_payload(guild.id, guild.members[bot.id])
            )
            # discord.py closes its voice websocket itself right after op 4; closing it from
            # here too would race its reconnect logic (voice_state.py, _poll_voice_ws).
            self.voice.revoke(guild.id, bot.id, close=False)
            return
        channel = guild.channels.get(int(channel_id))
        if channel is None or not channel.is_voice:
            _log.warning("op 4 to unknown voice channel %s", channel_id)
            return
        state = FakeVoiceState(
            bot.id,
            channel.id,
            session.session_id,
            bool(data.get("self_mute")),
            bool(data.get("self_deaf")),
        )
        guild.voice_states[bot.id] = state
        self.gateway.dispatch(
            "VOICE_STATE_UPDATE", state.to_payload(guild.id, guild.members[bot.id])
        )
        grant = self.voice.grant(guild.id, bot.id, channel.id, session.session_id)
        session.dispatch(
            "VOICE_SERVER_UPDATE",
            {"token": grant.token, "guild_id": str(guild.id), "endpoint": self.voice.endpoint},
        )
