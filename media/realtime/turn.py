"""TurnClient: short-lived TURN credentials from Cloudflare for browser participants.

Authenticated with a TURN key's API token (not the Realtime app secret); the token stays
on the server, only the expiring `iceServers` go to clients.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from ..backoff import Backoff
from .errors import RealtimeError
from .models import IceServers
from .rest import DEFAULT_TIMEOUT_S, ApiClient, RestApi
from .retry import HTTP_RETRY

__all__ = ["DEFAULT_TTL_S", "TurnClient"]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 86_400


class TurnClient(ApiClient):
    """base_url is the API root with its version, e.g. "https://rtc.live.cloudflare.com/v1"."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        api_token: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not key_id or not api_token:
            raise ValueError("key_id and api_token are required")
        self._base_url = base_url.rstrip("/")
        self._key_id = key_id
        self._api = RestApi(
            f"{self._base_url}/turn/keys/{quote(key_id, safe='')}",
            api_token,
            timeout_s=timeout_s,
            retry=retry or HTTP_RETRY,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"TurnClient(base_url={self._base_url!r}, key_id={self._key_id!r})"

    async def generate_ice_servers(
        self, ttl_s: int = DEFAULT_TTL_S, *, legacy: bool = False
    ) -> IceServers:
        """New credentials valid for `ttl_s` seconds.

        legacy=True uses the older credentials/generate endpoint, whose `iceServers` is a
        single object rather than a list; both shapes decode to the same IceServers.
        """
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        op = "credentials/generate" if legacy else "credentials/generate-ice-servers"
        payload = await self._api.request("POST", op, op=op, body={"ttl": ttl_s})
        try:
            servers = IceServers.from_json(payload)
        except ValueError as exc:
            raise RealtimeError(f"{op} failed: unexpected response: {exc}") from exc
        log.info("turn credentials generated op=%s ttl_s=%d", op, ttl_s)
        return servers

    async def revoke(self, username: str) -> None:
        """Revoke credentials before their TTL ends (Cloudflare answers 204)."""
        op = "credentials/revoke"
        await self._api.request("POST", f"credentials/{quote(username, safe='')}/revoke", op=op)
        log.info("turn credentials revoked op=%s", op)
