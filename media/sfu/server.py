"""`LocalSFU`: the embedded Realtime-compatible SFU, startable in-process or as a program."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from ..aiortc_compat import pin_host_addresses, pinned_host_addresses
from .api import build_app
from .registry import SESSION_REUSE_S, TRACK_IDLE_S, Registry
from .stun import StunServer

__all__ = ["DEV_APP_SECRET", "LOOPBACK_HOSTS", "LocalSFU", "SfuConfig"]

logger = logging.getLogger(__name__)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEV_APP_SECRET = "local-dev-secret"
"""Used when no secret is configured; only a loopback address may be served with it."""


@dataclass(frozen=True, slots=True)
class SfuConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port (tests); the service uses the configured one."""
    apps: Mapping[str, str] = field(default_factory=lambda: {"local": "local-secret"})
    """App id -> app secret. Clients send `Authorization: Bearer <secret>`."""
    turn_keys: Mapping[str, str] | None = None
    """TURN key id -> key secret; defaults to the apps."""
    ice_addresses: tuple[str, ...] | None = ("127.0.0.1",)
    """Host candidates offered to clients; None offers every interface."""
    track_idle_s: float = TRACK_IDLE_S
    session_reuse_s: float = SESSION_REUSE_S

    @classmethod
    def serving(cls, host: str, port: int, app_id: str, secret: str | None) -> SfuConfig:
        """The config for serving `host`: the development secret and loopback-only ICE on
        loopback; anything else needs a real secret and offers every interface."""
        loopback = host in LOOPBACK_HOSTS
        if secret is None and not loopback:
            raise ValueError(
                f"refusing to serve the local SFU on {host} with the development secret: "
                "set SWITCHBOARD_SFU_APP_SECRET"
            )
        return cls(
            host=host,
            port=port,
            apps={app_id: secret or DEV_APP_SECRET},
            ice_addresses=("127.0.0.1",) if loopback else None,
        )

    def __repr__(self) -> str:  # never print secrets
        return f"SfuConfig(host={self.host!r}, port={self.port}, apps={sorted(self.apps)})"


class LocalSFU:
    """`async with LocalSFU(SfuConfig()) as sfu:` serves the API at `sfu.base_url`."""

    def __init__(self, config: SfuConfig | None = None) -> None:
        self.config = config or SfuConfig()
        self.registry = Registry(self.config.track_idle_s, self.config.session_reuse_s)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stun = StunServer(self.config.host)
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        """The API root, e.g. `http://127.0.0.1:8787/v1` (as Cloudflare's `.../v1`)."""
        assert self._port is not None, "LocalSFU is not started"
        return f"http://{self.config.host}:{self._port}/v1"

    @property
    def app_id(self) -> str:
        return next(iter(self.config.apps))

    @property
    def app_secret(self) -> str:
        return self.config.apps[self.app_id]

    async def start(self) -> None:
        if self.config.ice_addresses is not None and pinned_host_addresses() is None:
            pin_host_addresses(self.config.ice_addresses)
        await self._stun.start()
        app = build_app(
            self.registry,
            self.config.apps,
            self.config.turn_keys if self.config.turn_keys is not None else self.config.apps,
            [self._stun.url],
        )
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await self._site.start()
        sockets = self._site._server.sockets  # type: ignore[union-attr]
        self._port = sockets[0].getsockname()[1]
        self.registry.start()
        logger.info("local sfu listening url=%s apps=%s", self.base_url, ",".join(self.config.apps))

    async def _on_shutdown(self, app: web.Application) -> None:
        # Open peer connections keep the process alive after SIGTERM (docs/webrtc-interop.md §2.7).
        await self.registry.stop()

    async def stop(self) -> None:
        await self.registry.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._stun.stop()
        logger.info("local sfu stopped")

    async def __aenter__(self) -> LocalSFU:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
