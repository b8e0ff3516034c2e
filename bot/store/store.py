"""`MappingStore`: the service's durable state, on SQLite (the default) or Postgres.

What it keeps:
- **channel mappings**: one row per voice channel, (guild_id, channel_id) → room, mode,
  created_by (the Discord user id that ran `/bridge link`, or `"config"` for config.toml's
  `[[bridges]]`), created_at.
- **rooms** and the guild that owns each: the first guild to link a channel into a room (or to
  create it) owns it; `link` and `load_static` create the room row when it is new. Whether
  another guild may link into a room is the caller's decision: `may_use_room` answers it.
- **room shares**: other guilds the owner let in, by redeeming a one-time **share code**
  (stored as a hash, with an expiry, used once).
- **web invites**: id (the invite token's `jti`), room, creator, role, expiry, a cap on
  concurrent participants, and `revoked_at`, so revocations survive a restart.

The operations are written once against `Database`; every write is one atomic transaction,
and write transactions run one at a time (see `database.py`). Times come from `clock`
(injectable for tests) and are stored in UTC.

Static mappings (`load_static`) are re-applied at each start. Config rows mirror the config
file: entries added or changed there are written, entries removed there are deleted. A
channel a user linked with `/bridge link` keeps the user's mapping — the config never
overwrites or deletes it (it is reported as `StaticLoad.shadowed`). A user who links a
config-mapped channel replaces its config row; a user who unlinks one removes it until the next
start, when the config file re-applies it (delete it from the file to drop it for good).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import AwareDatetime, ConfigDict, Field, validate_call

from ..config import BridgeMapping, BridgeMode, RoomName, Snowflake
from .database import Database, Row, Transaction
from .errors import NoSuchRoom, ShareCodeRefused
from .migrations import migrate
from .postgres import CONNECT_TIMEOUT_S, PostgresDatabase
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
    as_datetime,
)
from .sqlite import BUSY_TIMEOUT_S, SqliteDatabase

if TYPE_CHECKING:
    from ..config import StoreSettings

__all__ = [
    "DEFAULT_INVITE_CAP",
    "MAX_INVITE_CAP",
    "SHARE_CODE_TTL",
    "MappingStore",
]

logger = logging.getLogger(__name__)

DEFAULT_INVITE_CAP = 5
"""Participants one invite may hold at once, unless its creator says otherwise."""
MAX_INVITE_CAP = 50
"""No invite may hold more than a whole room's worth of web participants."""
SHARE_CODE_TTL = timedelta(hours=24)
SHARE_CODE_BYTES = 12
"""96 random bits: too many to guess, so a fast hash (SHA-256) is enough to store them."""

Clock = Callable[[], datetime]
# Inside MappingStore, `list` names a method: its annotations use these.
MappingList = list[ChannelMapping]
RoomList = list[Room]
ShareList = list[RoomShare]
InviteList = list[InviteRecord]
NonEmpty = Annotated[str, Field(min_length=1)]
InviteCap = Annotated[int, Field(ge=1, le=MAX_INVITE_CAP)]
_strict = validate_call(config=ConfigDict(strict=True))

_MAPPING = "guild_id, channel_id, room, mode, created_by, created_at"
_ROOM = "name, owner_guild_id, created_by, created_at"
_SHARE = "room, guild_id, granted_by, granted_at"
_INVITE = (
    "id, room, guild_id, created_by, role, max_participants, created_at, expires_at, "
    "revoked_at, revoked_by"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


# -- rows -------------------------------------------------------------------------------------


def _mapping(row: Row) -> ChannelMapping:
    guild_id, channel_id, room, mode, created_by, created_at = row
    return ChannelMapping(guild_id, channel_id, room, mode, created_by, as_datetime(created_at))


def _room(row: Row) -> Room:
    name, owner, created_by, created_at = row
    return Room(name, owner, created_by, as_datetime(created_at))


def _share(row: Row) -> RoomShare:
    room, guild_id, granted_by, granted_at = row
    return RoomShare(room, guild_id, granted_by, as_datetime(granted_at))


def _invite(row: Row) -> InviteRecord:
    (invite_id, room, guild_id, created_by, role, cap, created, expires, revoked, revoked_by) = row
    return InviteRecord(
        invite_id,
        room,
        guild_id,
        created_by,
        role,
        cap,
        as_datetime(created),
        as_datetime(expires),
        None if revoked is None else as_datetime(revoked),
        revoked_by,
    )


# -- statements used by several operations ----------------------------------------------------


async def _claim_room(tx: Transaction, room: str, guild_id: int, by: str, now: datetime) -> None:
    """Create the room owned by `guild_id` unless it exists (then its owner stays)."""
    await tx.execute(
        f"INSERT INTO rooms ({_ROOM}) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        room,
        guild_id,
        by,
        now,
    )


async def _upsert_mapping(
    tx: Transaction,
    guild_id: int,
    channel_id: int,
    room: str,
    mode: str,
    created_by: str,
    now: datetime,
) -> ChannelMapping:
    await _claim_room(tx, room, guild_id, created_by, now)
    rows = await tx.fetch(
        f"""
        INSERT INTO channel_mappings ({_MAPPING}) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (guild_id, channel_id) DO UPDATE SET
            room = excluded.room, mode = excluded.mode,
            created_by = excluded.created_by, created_at = excluded.created_at
        RETURNING {_MAPPING}
        """,
        guild_id,
        channel_id,
        room,
        mode,
        created_by,
        now,
    )
    return _mapping(rows[0])


async def _mappings(tx: Transaction, where: str, *args: Any) -> list[ChannelMapping]:
    rows = await tx.fetch(
        f"SELECT {_MAPPING} FROM channel_mappings {where} ORDER BY guild_id, channel_id", *args
    )
    return [_mapping(row) for row in rows]


async def _require_room(tx: Transaction, room: str) -> Room:
    rows = await tx.fetch(f"SELECT {_ROOM} FROM rooms WHERE name = $1", room)
    if not rows:
        raise NoSuchRoom(room)
    return _room(rows[0])


# -- the store --------------------------------------------------------------------------------


class MappingStore:
    """Mappings, rooms, shares and invites. Create with `await MappingStore.open(path)` (SQLite),
    `open_postgres(url)`, or `from_settings(settings.store)`, which picks one of the two."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        clock: Clock = utc_now,
    ) -> Self:
        """Open an SQLite file (creating it and its directory) and migrate it."""
        db = await SqliteDatabase.open(Path(path), busy_timeout_s=busy_timeout_s)
        return await cls._migrated(db, clock)

    @classmethod
    async def open_postgres(
        cls, url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, clock: Clock = utc_now
    ) -> Self:
        """Connect to Postgres (`postgres://` or `postgresql://` URL) and migrate the database."""
        db = await PostgresDatabase.open(url, connect_timeout_s=connect_timeout_s)
        return await cls._migrated(db, clock)

    @classmethod
    async def from_settings(cls, settings: StoreSettings) -> Self:
        """Postgres when DATABASE_URL is set, else the SQLite file at `[store] path`."""
        if settings.database_url is not None:
            return await cls.open_postgres(settings.database_url.get_secret_value())
        return await cls.open(settings.path)

    @classmethod
    async def _migrated(cls, db: Database, clock: Clock) -> Self:
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        logger.info("store open where=%s backend=%s", db.where, db.dialect.name)
        return cls(db, clock)

    @property
    def where(self) -> str:
        """The SQLite path or the Postgres server and database (never a password)."""
        return self._db.where

    @property
    def backend(self) -> str:
        """`sqlite` or `postgres`."""
        return self._db.dialect.name

    async def close(self) -> None:
        """Finish the calls already made, then close. Idempotent."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- channel mappings --------------------------------------------------------------------

    @_strict
    async def link(
        self,
        guild_id: Snowflake,
        channel_id: Snowflake,
        room: RoomName,
        mode: BridgeMode,
        created_by: NonEmpty,
    ) -> ChannelMapping:
        """Map a channel to a room, replacing any mapping it had; a new room is created, owned by
        `guild_id`.

        Raises `pydantic.ValidationError` (a ValueError) for an invalid id, room or mode.
        """
        async with self._db.transaction(write=True) as tx:
            return await _upsert_mapping(
                tx, guild_id, channel_id, room, mode, created_by, self._clock()
            )

    async def unlink(self, guild_id: int, channel_id: int) -> bool:
        """Remove a channel's mapping (the room and its owner stay); False if it had none."""
        async with self._db.transaction(write=True) as tx:
            changed = await tx.execute(
                "DELETE FROM channel_mappings WHERE guild_id = $1 AND channel_id = $2",
                guild_id,
                channel_id,
            )
        return changed > 0

    async def get(self, guild_id: int, channel_id: int) -> ChannelMapping | None:
        async with self._db.transaction(write=False) as tx:
            found = await _mappings(
                tx, "WHERE guild_id = $1 AND channel_id = $2", guild_id, channel_id
            )
        return found[0] if found else None

    async def list(self, guild_id: int) -> MappingList:
        """A guild's mappings, by channel id."""
        async with self._db.transaction(write=False) as tx:
            return await _mappings(tx, "WHERE guild_id = $1", guild_id)

    async def list_all(self) -> MappingList:
        """Every mapping, by guild then channel id."""
        async with self._db.transaction(write=False) as tx:
            return await _mappings(tx, "")

    async def by_room(self, room: str) -> MappingList:
        """The channels (of any guild) bridged into `room`."""
        async with self._db.transaction(write=False) as tx:
            return await _mappings(tx, "WHERE room = $1", room)

    async def load_static(self, mappings: Iterable[BridgeMapping]) -> StaticLoad:
        """Make the config rows match config.toml's `[[bridges]]`; user mappings win (see above)."""
        wanted: dict[tuple[int, int], BridgeMapping] = {}
        for entry in mappings:
            key = (entry.guild_id, entry.channel_id)
            if key in wanted:
                raise ValueError(f"guild {key[0]} channel {key[1]} appears twice in the mappings")
            wanted[key] = entry
        applied: MappingList = []
        removed: MappingList = []
        shadowed: MappingList = []
        now = self._clock()
        async with self._db.transaction(write=True) as tx:
            current = {(m.guild_id, m.channel_id): m for m in await _mappings(tx, "")}
            for key, row in current.items():
                if row.from_config and key not in wanted:
                    await tx.execute(
                        "DELETE FROM channel_mappings WHERE guild_id = $1 AND channel_id = $2",
                        *key,
                    )
                    removed.append(row)
            for key, entry in wanted.items():
                existing = current.get(key)
                if existing is not None and not existing.from_config:
                    shadowed.append(existing)
                elif (
                    existing is not None
                    and existing.room == entry.room
                    and existing.mode == entry.mode
                ):
                    applied.append(existing)  # unchanged: keep its created_at
                else:
                    applied.append(
                        await _upsert_mapping(tx, *key, entry.room, entry.mode, CONFIG_CREATOR, now)
                    )
        result = StaticLoad(tuple(applied), tuple(removed), tuple(shadowed))
        logger.info(
            "static mappings loaded applied=%d removed=%d shadowed=%d",
            len(result.applied),
            len(result.removed),
            len(result.shadowed),
        )
        for mapping in result.shadowed:
            logger.warning(
                "config mapping not applied, a user mapping owns the channel "
                "guild=%s channel=%s room=%s by=%s",
                mapping.guild_id,
                mapping.channel_id,
                mapping.room,
                mapping.created_by,
            )
        return result

    # -- rooms -------------------------------------------------------------------------------

    @_strict
    async def create_room(
        self, name: RoomName, owner_guild_id: Snowflake, created_by: NonEmpty
    ) -> Room:
        """Create a room owned by `owner_guild_id` (e.g. a web-only room). When the name is
        taken, the existing room comes back unchanged: compare its `owner_guild_id`."""
        async with self._db.transaction(write=True) as tx:
            await _claim_room(tx, name, owner_guild_id, created_by, self._clock())
            return await _require_room(tx, name)

    async def get_room(self, name: str) -> Room | None:
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(f"SELECT {_ROOM} FROM rooms WHERE name = $1", name)
        return _room(rows[0]) if rows else None

    async def rooms_for_guild(self, guild_id: int) -> RoomList:
        """The rooms a guild owns or was let into, by name (for autocomplete)."""
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(
                f"""
                SELECT {_ROOM} FROM rooms
                WHERE owner_guild_id = $1
                   OR name IN (SELECT room FROM room_shares WHERE guild_id = $1)
                ORDER BY name
                """,
                guild_id,
            )
        return [_room(row) for row in rows]

    async def may_use_room(self, room: str, guild_id: int) -> bool:
        """Whether `guild_id` owns `room` or shares it. False for a room that does not exist."""
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(
                """
                SELECT 1 FROM rooms WHERE name = $1 AND owner_guild_id = $2
                UNION ALL
                SELECT 1 FROM room_shares WHERE room = $1 AND guild_id = $2
                """,
                room,
                guild_id,
            )
        return bool(rows)

    # -- room shares -------------------------------------------------------------------------

    @_strict
    async def create_share_code(
        self, room: RoomName, created_by: NonEmpty, ttl: timedelta = SHARE_CODE_TTL
    ) -> ShareCode:
        """A one-time code that lets one other guild into `room` until `ttl` from now.

        The code is returned here only: the store keeps its hash. Raises `NoSuchRoom`.
        """
        if ttl <= timedelta(0):
            raise ValueError("a share code needs a positive lifetime")
        code = secrets.token_urlsafe(SHARE_CODE_BYTES)
        now = self._clock()
        async with self._db.transaction(write=True) as tx:
            await _require_room(tx, room)
            await tx.execute(
                """
                INSERT INTO share_codes (code_hash, room, created_by, created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5)
                """,
                _hash_code(code),
                room,
                created_by,
                now,
                now + ttl,
            )
        return ShareCode(room, code, now + ttl)

    @_strict
    async def redeem_share_code(
        self, code: str, guild_id: Snowflake, granted_by: NonEmpty
    ) -> RoomShare:
        """Use a share code: `guild_id` joins the code's room. A code works once.

        Raises `ShareCodeRefused` (unknown, expired, used, or the guild owns the room).
        """
        now = self._clock()
        async with self._db.transaction(write=True) as tx:
            rows = await tx.fetch(
                """
                SELECT s.room, s.expires_at, s.used_at, r.owner_guild_id
                FROM share_codes AS s JOIN rooms AS r ON r.name = s.room
                WHERE s.code_hash = $1
                """,
                _hash_code(code.strip()),
            )
            if not rows:
                raise ShareCodeRefused("unknown")
            room, expires_at, used_at, owner = rows[0]
            if used_at is not None:
                raise ShareCodeRefused("used")
            if as_datetime(expires_at) <= now:
                raise ShareCodeRefused("expired")
            if owner == guild_id:
                raise ShareCodeRefused("owner")
            await tx.execute(
                "UPDATE share_codes SET used_at = $2, used_by_guild = $3 WHERE code_hash = $1",
                _hash_code(code.strip()),
                now,
                guild_id,
            )
            await tx.execute(
                f"""
                INSERT INTO room_shares ({_SHARE}) VALUES ($1, $2, $3, $4)
                ON CONFLICT (room, guild_id) DO NOTHING
                """,
                room,
                guild_id,
                granted_by,
                now,
            )
            shares = await tx.fetch(
                f"SELECT {_SHARE} FROM room_shares WHERE room = $1 AND guild_id = $2",
                room,
                guild_id,
            )
        share = _share(shares[0])
        logger.info("room shared room=%s guild=%s by=%s", room, guild_id, granted_by)
        return share

    async def shares(self, room: str) -> ShareList:
        """The guilds let into `room` (the owner not included), by guild id."""
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(
                f"SELECT {_SHARE} FROM room_shares WHERE room = $1 ORDER BY guild_id", room
            )
        return [_share(row) for row in rows]

    async def remove_share(self, room: str, guild_id: int) -> ShareRemoval | None:
        """Take `guild_id` out of `room`: its share and its channels' mappings into the room go,
        together. None if the guild had no share."""
        async with self._db.transaction(write=True) as tx:
            shares = await tx.fetch(
                f"DELETE FROM room_shares WHERE room = $1 AND guild_id = $2 RETURNING {_SHARE}",
                room,
                guild_id,
            )
            if not shares:
                return None
            unlinked = await tx.fetch(
                f"""
                DELETE FROM channel_mappings WHERE room = $1 AND guild_id = $2
                RETURNING {_MAPPING}
                """,
                room,
                guild_id,
            )
        mappings = sorted((_mapping(row) for row in unlinked), key=lambda m: m.channel_id)
        logger.info(
            "room share removed room=%s guild=%s unlinked=%d", room, guild_id, len(mappings)
        )
        return ShareRemoval(_share(shares[0]), tuple(mappings))

    # -- web invites -------------------------------------------------------------------------

    @_strict
    async def create_invite(
        self,
        room: RoomName,
        guild_id: Snowflake,
        created_by: NonEmpty,
        role: InviteRole,
        expires_at: AwareDatetime,
        max_participants: InviteCap = DEFAULT_INVITE_CAP,
    ) -> InviteRecord:
        """Record a new invite; its `id` goes into the signed token as `jti`. Raises
        `NoSuchRoom`, or ValueError for an expiry that is not in the future."""
        now = self._clock()
        if expires_at <= now:
            raise ValueError("an invite must expire in the future")
        async with self._db.transaction(write=True) as tx:
            await _require_room(tx, room)
            rows = await tx.fetch(
                f"""
                INSERT INTO invites ({_INVITE})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)
                RETURNING {_INVITE}
                """,
                uuid.uuid4().hex,
                room,
                guild_id,
                created_by,
                role,
                max_participants,
                now,
                expires_at,
            )
        return _invite(rows[0])

    async def get_invite(self, invite_id: str) -> InviteRecord | None:
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(f"SELECT {_INVITE} FROM invites WHERE id = $1", invite_id)
        return _invite(rows[0]) if rows else None

    async def invites(self, room: str, *, usable_only: bool = True) -> InviteList:
        """A room's invites, oldest first; by default only those neither revoked nor expired."""
        condition = "AND revoked_at IS NULL AND expires_at > $2" if usable_only else ""
        args: tuple[Any, ...] = (room, self._clock()) if usable_only else (room,)
        async with self._db.transaction(write=False) as tx:
            rows = await tx.fetch(
                f"SELECT {_INVITE} FROM invites WHERE room = $1 {condition} "
                "ORDER BY created_at, id",
                *args,
            )
        return [_invite(row) for row in rows]

    @_strict
    async def revoke_invite(self, invite_id: str, revoked_by: NonEmpty) -> InviteRecord | None:
        """Revoke an invite for good. Revoking twice keeps the first revocation. None if there is
        no such invite."""
        async with self._db.transaction(write=True) as tx:
            await tx.execute(
                """
                UPDATE invites SET revoked_at = $2, revoked_by = $3
                WHERE id = $1 AND revoked_at IS NULL
                """,
                invite_id,
                self._clock(),
                revoked_by,
            )
            rows = await tx.fetch(f"SELECT {_INVITE} FROM invites WHERE id = $1", invite_id)
        if rows:
            logger.info("invite revoked id=%s by=%s", invite_id, revoked_by)
        return _invite(rows[0]) if rows else None

    async def delete_expired(self) -> int:
        """Forget invites and share codes whose expiry has passed (their tokens and codes are
        refused by their expiry anyway). The number of rows deleted."""
        now = self._clock()
        async with self._db.transaction(write=True) as tx:
            invites = await tx.execute("DELETE FROM invites WHERE expires_at <= $1", now)
            codes = await tx.execute("DELETE FROM share_codes WHERE expires_at <= $1", now)
        return invites + codes
