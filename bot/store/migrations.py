"""The schema, as versioned migrations shared by both backends, and `migrate()`, which applies
them when a store opens.

Migration N takes a database from schema version N-1 to N. All pending migrations run in one
write transaction: they all apply, or the database stays exactly as it was (SQLite and
Postgres both roll back DDL). To change the schema, append a migration; never edit a shipped
one (databases out there were made by it). A database newer than this code is refused rather
than guessed at. Statements use the tokens of `dialect.Dialect`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .database import Database
from .errors import StoreError

__all__ = ["MIGRATIONS", "Migration", "migrate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    summary: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "channel-to-room mappings",
        (
            """
            CREATE TABLE channel_mappings (
                guild_id   {snowflake} NOT NULL CHECK (guild_id > 0),
                channel_id {snowflake} NOT NULL CHECK (channel_id > 0),
                room       TEXT NOT NULL CHECK ({room_name:room}),
                mode       TEXT NOT NULL CHECK (mode IN ('manual', 'auto')),
                created_by TEXT NOT NULL CHECK (created_by <> ''),
                created_at {timestamp} NOT NULL,
                PRIMARY KEY (guild_id, channel_id)
            ) {strict}
            """,
            "CREATE INDEX channel_mappings_by_room ON channel_mappings (room)",
        ),
    ),
    Migration(
        "rooms with an owner guild, room shares and share codes, web invites",
        (
            """
            CREATE TABLE rooms (
                name           TEXT NOT NULL PRIMARY KEY CHECK ({room_name:name}),
                owner_guild_id {snowflake} NOT NULL CHECK (owner_guild_id > 0),
                created_by     TEXT NOT NULL CHECK (created_by <> ''),
                created_at     {timestamp} NOT NULL
            ) {strict}
            """,
            "CREATE INDEX rooms_by_owner ON rooms (owner_guild_id)",
            # Every room already linked belongs to the guild that linked it first (ties, which
            # only a bulk import could make, go to the lowest guild then channel id).
            """
            INSERT INTO rooms (name, owner_guild_id, created_by, created_at)
            SELECT m.room, m.guild_id, m.created_by, m.created_at
            FROM channel_mappings AS m
            WHERE NOT EXISTS (
                SELECT 1 FROM channel_mappings AS e
                WHERE e.room = m.room
                  AND (e.created_at, e.guild_id, e.channel_id)
                      < (m.created_at, m.guild_id, m.channel_id)
            )
            """,
            """
            CREATE TABLE room_shares (
                room       TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
                guild_id   {snowflake} NOT NULL CHECK (guild_id > 0),
                granted_by TEXT NOT NULL CHECK (granted_by <> ''),
                granted_at {timestamp} NOT NULL,
                PRIMARY KEY (room, guild_id)
            ) {strict}
            """,
            "CREATE INDEX room_shares_by_guild ON room_shares (guild_id)",
            # Only a hash of each code: a copy of the database does not let anyone in.
            """
            CREATE TABLE share_codes (
                code_hash     TEXT NOT NULL PRIMARY KEY,
                room          TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
                created_by    TEXT NOT NULL CHECK (created_by <> ''),
                created_at    {timestamp} NOT NULL,
                expires_at    {timestamp} NOT NULL,
                used_at       {timestamp},
                used_by_guild {snowflake}
            ) {strict}
            """,
            """
            CREATE TABLE invites (
                id               TEXT NOT NULL PRIMARY KEY CHECK (id <> ''),
                room             TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
                guild_id         {snowflake} NOT NULL CHECK (guild_id > 0),
                created_by       TEXT NOT NULL CHECK (created_by <> ''),
                role             TEXT NOT NULL CHECK (role IN ('speaker', 'listener')),
                max_participants INTEGER NOT NULL CHECK (max_participants > 0),
                created_at       {timestamp} NOT NULL,
                expires_at       {timestamp} NOT NULL,
                revoked_at       {timestamp},
                revoked_by       TEXT
            ) {strict}
            """,
            "CREATE INDEX invites_by_room ON invites (room)",
        ),
    ),
)


async def migrate(db: Database) -> None:
    """Bring the database to the newest schema, in one transaction; refuse a newer one."""
    target = len(MIGRATIONS)
    async with db.transaction(write=True) as tx:
        version = await db.schema_version(tx)
        if version > target:
            raise StoreError(
                db.where,
                f"schema version {version} is newer than this Switchboard understands "
                f"(up to {target}): upgrade Switchboard or restore a backup",
            )
        for number in range(version + 1, target + 1):
            try:
                for statement in MIGRATIONS[number - 1].statements:
                    await tx.execute(db.dialect.render(statement))
            except StoreError as exc:  # the whole upgrade rolls back: the database stays as it was
                raise StoreError(
                    db.where,
                    f"migration {number} failed, the database is unchanged "
                    f"(schema version {version}): {exc.detail}",
                ) from None
            await db.set_schema_version(tx, number)
    if version < target:
        logger.info("store migrated where=%s from=%d to=%d", db.where, version, target)
