"""`IceServerSource`: the ICE servers a browser participant's page is given.

- a Cloudflare TURN key configured: fresh STUN/TURN credentials from Cloudflare per
  participant (`TURN_TTL_S`, port-53 URLs dropped: browsers block that port), revoked when
  the participant leaves;
- the Cloudflare backend without a TURN key: Cloudflare's STUN server only;
- the local SFU: none (its host candidates are reached directly).

The TURN key's API token never leaves the service; only the expiring credentials do.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from media.realtime import IceServer, IceServers, RealtimeError, TurnClient

__all__ = ["CLOUDFLARE_STUN", "TURN_TTL_S", "IceGrant", "IceServerSource"]

logger = logging.getLogger(__name__)

CLOUDFLARE_STUN = "stun:stun.cloudflare.com:3478"
TURN_TTL_S = 3600
"""Short-lived: the page gets new ones when it refreshes its credential past half-life,
and on every reconnect."""
REVOKE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class IceGrant:
    servers: IceServers
    turn_username: str | None = None
    """Set when TURN credentials were made (to revoke them later)."""

    def to_json(self) -> list[dict[str, object]]:
        return [server.to_json() for server in self.servers.servers]


class IceServerSource:
    def __init__(self, *, turn: TurnClient | None = None, stun_urls: tuple[str, ...] = ()) -> None:
        self._turn = turn
        self._stun = IceServers((IceServer(stun_urls),)) if stun_urls else IceServers(())

    @classmethod
    def none(cls) -> IceServerSource:
        """The local SFU: no STUN or TURN needed."""
        return cls()

    @classmethod
    def stun_only(cls) -> IceServerSource:
        return cls(stun_urls=(CLOUDFLARE_STUN,))

    @property
    def uses_turn(self) -> bool:
        return self._turn is not None

    async def grant(self) -> IceGrant:
        """ICE servers for one participant. A TURN failure falls back to STUN (logged): a
        browser that cannot reach TURN may still connect directly."""
        if self._turn is None:
            return IceGrant(self._stun)
        try:
            servers = (await self._turn.generate_ice_servers(TURN_TTL_S)).for_browser()
        except RealtimeError as exc:
            logger.warning("turn credentials failed, giving stun only error=%s", exc)
            return IceGrant(IceServers((IceServer((CLOUDFLARE_STUN,)),)))
        return IceGrant(servers, servers.username)

    async def revoke(self, usernames: list[str]) -> None:
        """Best effort: credentials expire by themselves anyway."""
        if self._turn is None or not usernames:
            return
        turn = self._turn

        async def one(username: str) -> None:
            try:
                await asyncio.wait_for(turn.revoke(username), REVOKE_TIMEOUT_S)
            except (RealtimeError, TimeoutError) as exc:
                logger.info("turn revoke failed error=%s", exc)

        await asyncio.gather(*(one(name) for name in usernames))

    async def aclose(self) -> None:
        if self._turn is not None:
            await self._turn.aclose()
