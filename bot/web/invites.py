"""`InviteLinks`: the links `/bridge invite` and `python -m bot invite` hand out,
`{public_url}/r/{room}#t={token}`.

The token rides in the URL fragment: browsers send fragments neither to servers (so no
access log or proxy sees it) nor in `Referer`. The page reads it and sends it once, in the
body of its join request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .tokens import Invite, Role, TokenSigner

if TYPE_CHECKING:  # bot.store imports bot.config, which imports this package
    from ..store import InviteRecord

__all__ = ["INVITE_TTLS", "InviteLink", "InviteLinks"]

INVITE_TTLS: dict[str, int] = {"1h": 3600, "8h": 8 * 3600, "24h": 86_400, "7d": 7 * 86_400}
"""The expiries `/bridge invite` offers."""


@dataclass(frozen=True, slots=True)
class InviteLink:
    url: str
    invite: Invite


class InviteLinks:
    def __init__(self, signer: TokenSigner, public_url: str) -> None:
        self._signer = signer
        self.public_url = public_url.rstrip("/")

    def create(
        self,
        room: str,
        role: Role,
        ttl_s: int,
        *,
        guild_id: int | None = None,
        created_by: int | None = None,
        operator: bool = False,
    ) -> InviteLink:
        token, invite = self._signer.issue_invite(
            room, role, ttl_s, guild_id=guild_id, created_by=created_by, operator=operator
        )
        return InviteLink(f"{self.public_url}/r/{room}#t={token}", invite)

    def for_record(self, record: InviteRecord) -> InviteLink:
        """The link of a stored invite (`/bridge invite`): its id is the token's `jti`."""
        ttl_s = math.ceil((record.expires_at - datetime.now(UTC)).total_seconds())
        token, invite = self._signer.issue_invite(
            record.room,
            Role(record.role),
            max(1, ttl_s),
            guild_id=record.guild_id,
            created_by=record.created_by,
            jti=record.id,
        )
        return InviteLink(f"{self.public_url}/r/{record.room}#t={token}", invite)
