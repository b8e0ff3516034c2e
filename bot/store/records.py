"""The typed rows the store hands out: mappings, rooms, shares, share codes, invites."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ..config import BridgeMode

__all__ = [
    "CONFIG_CREATOR",
    "ChannelMapping",
    "InviteRecord",
    "InviteRole",
    "Room",
    "RoomShare",
    "ShareCode",
    "ShareRemoval",
    "StaticLoad",
    "as_datetime",
]

CONFIG_CREATOR = "config"
"""`created_by` of the mappings that come from config.toml's `[[bridges]]`."""

InviteRole = Literal["speaker", "listener"]


def as_datetime(value: datetime | str) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite keeps ISO text, Postgres timestamptz)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ChannelMapping:
    """A voice channel bridged into a room."""

    guild_id: int
    channel_id: int
    room: str
    mode: BridgeMode
    created_by: str
    """Discord user id (as text) of whoever linked it, or "config"."""
    created_at: datetime
    """When this mapping was made (UTC)."""

    @property
    def from_config(self) -> bool:
        return self.created_by == CONFIG_CREATOR


@dataclass(frozen=True, slots=True)
class StaticLoad:
    """What `load_static` did, for the start-up log."""

    applied: tuple[ChannelMapping, ...]
    """Config mappings now in the store (written, or already there unchanged)."""
    removed: tuple[ChannelMapping, ...]
    """Config rows deleted because config.toml no longer has them."""
    shadowed: tuple[ChannelMapping, ...]
    """User-made mappings kept in place of a config entry for the same channel."""


@dataclass(frozen=True, slots=True)
class Room:
    """A room and the guild that owns it (the first to link a channel into it, or create it)."""

    name: str
    owner_guild_id: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RoomShare:
    """A guild other than the owner that the owner let into the room."""

    room: str
    guild_id: int
    granted_by: str
    """Discord user id of the admin who redeemed the share code."""
    granted_at: datetime


@dataclass(frozen=True, slots=True)
class ShareCode:
    """A one-time code letting one other guild into a room. Only its hash is stored: `code` is
    known only to the caller that created it."""

    room: str
    code: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ShareRemoval:
    """What `remove_share` took away: the share, and the guild's channels linked to the room."""

    share: RoomShare
    unlinked: tuple[ChannelMapping, ...]


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """A web invite into a room: its id is the `jti` of the signed invite token."""

    id: str
    room: str
    guild_id: int
    """The guild whose admin created it."""
    created_by: str
    role: InviteRole
    max_participants: int
    """How many participants may be in the room through this invite at once (rejoins count)."""
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def usable_at(self, moment: datetime) -> bool:
        """Neither revoked nor expired at `moment`."""
        return self.revoked_at is None and moment < self.expires_at
