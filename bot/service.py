"""The composition root: builds every part of the service from the settings, runs them, and
shuts them down in order (voice first, then Realtime sessions, then the servers)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import aiohttp
import discord
from redis.exceptions import RedisError

from media.peer import PeerConfig
from media.realtime import RealtimeClient
from media.rooms import InMemoryDirectory, RoomDirectory
from media.rooms_redis import RedisDirectory, RedisDirectoryConfig
from media.sfu import LocalSFU, SfuConfig

from .bridges import BridgeManager, LinkFactory
from .client import SwitchboardBot
from .config import Settings, describe_missing_token
from .http import HealthServer
from .metrics import Metrics
from .startup import StartupError, listening, open_store
from .store import MappingStore
from .web import WebApi, known_rooms

__all__ = ["SHUTDOWN_BUDGET_S", "Service"]

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 9.0
"""SIGTERM to exit stays under the 10 s most process managers wait before SIGKILL."""


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        link_factory: LinkFactory,
        metrics: Metrics | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.directory: RoomDirectory = InMemoryDirectory()
        self._shared_directory: RedisDirectory | None = None
        if settings.redis.url is not None:
            self._shared_directory = RedisDirectory(
                settings.redis.url.get_secret_value(),
                RedisDirectoryConfig(member_expiry_s=settings.redis.member_expiry_s),
            )
            self.directory = self._shared_directory
        self.sfu: LocalSFU | None = None
        self.realtime: RealtimeClient | None = None
        self.store: MappingStore | None = None
        self.http: HealthServer | None = None
        self.web: WebApi | None = None
        self.bridges: BridgeManager | None = None
        self.bot: SwitchboardBot | None = None
        self._link_factory = link_factory
        self._connector_factory = connector_factory
        self._bot_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- readiness -------------------------------------------------------------------------

    def _discord_ready(self) -> str | None:
        if self.settings.discord.token is None:
            return "DISCORD_TOKEN is not set"
        if self.bot is None or not self.bot.is_ready():
            return "not connected to Discord yet"
        return None

    def _store_ready(self) -> str | None:
        return None if self.store is not None else "mapping store not open"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if self._shared_directory is not None:
            await self._start_shared_directory()
        if s.backend == "local":
            # load_settings already refused a non-loopback SFU without its own secret.
            secret = s.sfu.app_secret.get_secret_value() if s.sfu.app_secret else None
            self.sfu = LocalSFU(SfuConfig.serving(s.sfu.host, s.sfu.port, s.sfu.app_id, secret))
            async with listening(s.sfu.host, s.sfu.port, "sfu.port", "SWITCHBOARD_SFU_PORT"):
                await self.sfu.start()
            self.realtime = RealtimeClient(
                self.sfu.base_url,
                self.sfu.app_id,
                self.sfu.app_secret,
                on_error=self.metrics.realtime_error,
            )
        else:
            assert s.realtime.app_id is not None and s.realtime.app_secret is not None
            self.realtime = RealtimeClient(
                s.realtime.base_url,
                s.realtime.app_id,
                s.realtime.app_secret.get_secret_value(),
                on_error=self.metrics.realtime_error,
            )
        self.store = await open_store(s.store)
        loaded = await self.store.load_static(s.bridges)
        logger.info("static bridges loaded %s", loaded)
        self.bridges = BridgeManager(
            self.realtime, self.directory, self._link_factory, self.metrics, PeerConfig()
        )
        self.metrics.state.watch_directory(self.directory)
        self.http = HealthServer(
            s.http.host,
            s.http.port,
            self.metrics,
            {"store": self._store_ready, "discord": self._discord_ready},
        )
        self.web = WebApi.from_settings(
            s,
            directory=self.directory,
            realtime=self.realtime,
            room_exists=known_rooms(self.store, self.directory),
            invite_lookup=self.store.get_invite,
        )
        self.web.attach(self.http.app)
        await self.web.start()
        http_env = "SWITCHBOARD_HTTP_PORT or PORT"
        async with listening(s.http.host, s.http.port, "http.port", http_env):
            await self.http.start()
        if s.discord.token is None:
            logger.warning("%s", describe_missing_token())
            return
        self.bot = SwitchboardBot(
            store=self.store,
            bridges=self.bridges,
            directory=self.directory,
            auto_leave_delay_s=s.discord.auto_leave_delay_s,
            dev_guild_id=s.discord.dev_guild_id,
            sync_globally=s.discord.sync_globally,
            invites=self.web.invites,
            participants=self.web.registry,
            moderator_role_id=s.discord.moderator_role_id,
            connector=self._connector_factory() if self._connector_factory else None,
        )
        self._bot_task = asyncio.create_task(
            self._run_bot(s.discord.token.get_secret_value()), name="discord"
        )

    async def _start_shared_directory(self) -> None:
        assert self._shared_directory is not None
        try:
            await self._shared_directory.start()
        except (RedisError, OSError) as exc:
            # The URL may carry a password: name the variable, never its value.
            raise StartupError(f"room directory (env REDIS_URL) cannot be reached: {exc}") from None
        logger.info("room directory is shared through redis owner=%s", self._shared_directory.owner)

    async def _run_bot(self, token: str) -> None:
        assert self.bot is not None
        try:
            await self.bot.start(token)
        except discord.LoginFailure:
            logger.error(
                "Discord rejected DISCORD_TOKEN (login failed): reset the token in the Developer "
                "Portal and set the new one"
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("discord client stopped")

    async def stop(self) -> None:
        """Leave voice channels, close Realtime sessions, stop servers: all within budget."""
        try:
            await asyncio.wait_for(self._stop(), SHUTDOWN_BUDGET_S)
        except TimeoutError:
            logger.error("shutdown exceeded %.0f s; exiting anyway", SHUTDOWN_BUDGET_S)

    async def _stop(self) -> None:
        if self.bridges is not None:
            await self.bridges.stop_all("shutdown")
        if self.bot is not None:
            await self.bot.close()
        if self._bot_task is not None:
            self._bot_task.cancel()
            await asyncio.gather(self._bot_task, return_exceptions=True)
        if self.web is not None:
            await self.web.stop()
        if self.http is not None:
            await self.http.stop()
        if self.realtime is not None:
            await self.realtime.aclose()
        if self.store is not None:
            await self.store.close()
        if self._shared_directory is not None:
            await self._shared_directory.stop()
        if self.sfu is not None:
            await self.sfu.stop()
        logger.info("service stopped")

    async def run_until_signalled(self) -> None:
        """Run until SIGINT or SIGTERM, then stop.

        The handlers stay installed until the loop closes: a second signal while stopping is
        logged and ignored, so leaving voice, closing Realtime sessions and releasing the
        sockets always finish (within `SHUTDOWN_BUDGET_S`).
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            logger.warning("signal received again signal=%s: ignored, shutdown continues", sig.name)
            return
        logger.info("signal received signal=%s: shutting down", sig.name)
        self._stopping.set()
