"""The durable store: channel mappings, rooms and their owners, room shares, web invites.

SQLite (one file, the embedded default) or Postgres (`DATABASE_URL`), with one schema and the
same versioned migrations for both. See `store.py` for what is kept and `migrations.py` for
how the schema changes.
"""

from .errors import NoSuchRoom, ShareCodeRefused, StoreError
from .migrations import MIGRATIONS, Migration
from .records import (
    CONFIG_CREATOR,
    ChannelMapping,
    InviteRecord,
    InviteRole,
    Room,
    RoomShare,
    ShareCode,
    ShareRemoval,
    StaticLoad,
)
from .store import DEFAULT_INVITE_CAP, MAX_INVITE_CAP, SHARE_CODE_TTL, MappingStore

__all__ = [
    "CONFIG_CREATOR",
    "DEFAULT_INVITE_CAP",
    "MAX_INVITE_CAP",
    "MIGRATIONS",
    "SHARE_CODE_TTL",
    "ChannelMapping",
    "InviteRecord",
    "InviteRole",
    "MappingStore",
    "Migration",
    "NoSuchRoom",
    "Room",
    "RoomShare",
    "ShareCode",
    "ShareCodeRefused",
    "ShareRemoval",
    "StaticLoad",
    "StoreError",
]
