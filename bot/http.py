"""The service's HTTP server: `/live`, `/ready`, Prometheus `/metrics` (and, later, the web
participants' API and page, which add their routes to the same application)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from .metrics import Metrics

__all__ = ["HealthServer", "ReadyCheck"]

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], str | None]
"""Returns None when fine, else why the service is not ready (shown in /ready)."""
REQUEST_GRACE_S = 2.0
"""How long stopping waits for requests in flight: a slow client must not use up the
shutdown budget that leaving voice and closing Realtime sessions need."""


class HealthServer:
    def __init__(
        self, host: str, port: int, metrics: Metrics, checks: Mapping[str, ReadyCheck]
    ) -> None:
        self.app = web.Application()
        self._host = host
        self._port = port
        self._metrics = metrics
        self._checks = dict(checks)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app.router.add_get("/live", self._live)
        self.app.router.add_get("/ready", self._ready)
        self.app.router.add_get("/metrics", self._render_metrics)

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready(self, request: web.Request) -> web.Response:
        failing = {
            name: why for name, check in self._checks.items() if (why := check()) is not None
        }
        body = {
            "ready": not failing,
            "checks": {name: failing.get(name, "ok") for name in self._checks},
        }
        return web.json_response(body, status=503 if failing else 200)

    async def _render_metrics(self, request: web.Request) -> web.Response:
        await self._metrics.refresh()
        return web.Response(body=self._metrics.render(), content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=REQUEST_GRACE_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        logger.info("http listening url=http://%s:%s", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
