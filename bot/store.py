"""`MappingStore`: which Discord voice channel is bridged into which room, kept in SQLite.

- One row per voice channel: (guild_id, channel_id) → room, mode, created_by, created_at.
  `created_by` is the Discord user id that ran `/bridge link`, or `"config"` for the
  `[[bridges]]` tables of config.toml.
- The schema has a version (`PRAGMA user_version`). `MIGRATIONS` are applied in order, all in
  one transaction, when the store opens: to change the schema, append a function; never edit
  a shipped one. A database newer than this code is refused rather than guessed at.
- The API is async and never blocks the event loop: every SQLite call runs on one worker
  thread that owns the connection, so calls are serialized without a lock, in arrival order.
  Each write is one `BEGIN IMMEDIATE` transaction (atomic, durable: WAL journal,
  synchronous=FULL); other processes or stores on the same file wait up to `busy_timeout_s`
  for the write lock instead of failing with "database is locked".

Static mappings (`load_static`) are re-applied at each start. Config rows mirror the config
file: entries added or changed there are written, entries removed there are deleted. A
channel a user linked with `/bridge link` keeps the user's mapping — the config never
overwrites or deletes it (it is reported as `StaticLoad.shadowed`). A user who links a
config-mapped channel replaces its config row; a user who unlinks one removes it until the next
start, when the config file re-applies it (delete it from the file to drop it for good).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar, cast

from pydantic import ConfigDict, Field, validate_call

from .config import BridgeMapping, BridgeMode, RoomName, Snowflake

__all__ = [
    "CONFIG_CREATOR",
    "MIGRATIONS",
    "ChannelMapping",
    "MappingStore",
    "StaticLoad",
    "StoreError",
]

logger = logging.getLogger(__name__)

CONFIG_CREATOR = "config"
"""`created_by` of the mappings that come from config.toml's `[[bridges]]`."""
BUSY_TIMEOUT_S = 5.0
WAL_RETRY_S = 0.01

_T = TypeVar("_T")


class StoreError(Exception):
    """The database cannot be used (not SQLite, or a schema newer than this code)."""


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


MappingList = list[ChannelMapping]


# -- schema -----------------------------------------------------------------------------------


def _migration_1(db: sqlite3.Connection) -> None:
    """The mapping table."""
    db.execute(
        """
        CREATE TABLE channel_mappings (
            guild_id   INTEGER NOT NULL CHECK (guild_id > 0),
            channel_id INTEGER NOT NULL CHECK (channel_id > 0),
            room       TEXT NOT NULL
                       CHECK (length(room) BETWEEN 1 AND 64 AND room NOT GLOB '*[^a-z0-9_-]*'),
            mode       TEXT NOT NULL CHECK (mode IN ('manual', 'auto')),
            created_by TEXT NOT NULL CHECK (created_by <> ''),
            created_at TEXT NOT NULL,
            PRIMARY KEY (guild_id, channel_id)
        ) STRICT
        """
    )
    db.execute("CREATE INDEX channel_mappings_by_room ON channel_mappings (room)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1,)
"""Migration N (1-based) takes a database from user_version N-1 to N. Append only."""

_COLUMNS = "guild_id, channel_id, room, mode, created_by, created_at"


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; each write opens BEGIN IMMEDIATE itself.
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _use_wal(db, path, busy_timeout_s)
        db.execute("PRAGMA synchronous = FULL")
        _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"{path}: cannot use this file as the mapping store: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _use_wal(db: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    The switch needs the file to itself and SQLite does not apply busy_timeout to it: when
    another connection is opening the same new file at that moment, retry until the deadline.
    This runs on the store's thread, never on the event loop.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
        if time.monotonic() >= deadline:
            raise StoreError(f"{path}: could not switch to WAL mode: the file stayed locked")
        time.sleep(WAL_RETRY_S)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    with _transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{path}: schema version {version} is newer than this Switchboard understands "
                f"(up to {len(MIGRATIONS)}): upgrade Switchboard or restore a backup"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            try:
                MIGRATIONS[number - 1](db)
            except Exception as exc:  # the whole upgrade rolls back: the file stays as it was
                raise StoreError(
                    f"{path}: migration {number} failed, the database is unchanged "
                    f"(schema version {version}): {exc}"
                ) from exc
            db.execute(f"PRAGMA user_version = {number}")
    if version < len(MIGRATIONS):
        logger.info("store migrated path=%s from=%d to=%d", path, version, len(MIGRATIONS))


class _transaction:
    """`BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on any error: all or nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:  # an error, or a COMMIT that failed
                self._db.execute("ROLLBACK")


def _row(row: tuple[Any, ...]) -> ChannelMapping:
    guild_id, channel_id, room, mode, created_by, created_at = row
    return ChannelMapping(
        guild_id, channel_id, room, mode, created_by, datetime.fromisoformat(created_at)
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


# -- operations (run on the store's thread) ---------------------------------------------------


def _upsert(
    db: sqlite3.Connection, guild_id: int, channel_id: int, room: str, mode: str, created_by: str
) -> ChannelMapping:
    rows = db.execute(
        f"""
        INSERT INTO channel_mappings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (guild_id, channel_id) DO UPDATE SET
            room = excluded.room, mode = excluded.mode,
            created_by = excluded.created_by, created_at = excluded.created_at
        RETURNING {_COLUMNS}
        """,
        (guild_id, channel_id, room, mode, created_by, _now()),
    ).fetchall()
    return _row(rows[0])


def _link(
    db: sqlite3.Connection, guild_id: int, channel_id: int, room: str, mode: str, created_by: str
) -> ChannelMapping:
    with _transaction(db):
        return _upsert(db, guild_id, channel_id, room, mode, created_by)


def _unlink(db: sqlite3.Connection, guild_id: int, channel_id: int) -> bool:
    with _transaction(db):
        cursor = db.execute(
            "DELETE FROM channel_mappings WHERE guild_id = ? AND channel_id = ?",
            (guild_id, channel_id),
        )
        return cursor.rowcount > 0


def _select(db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> MappingList:
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM channel_mappings {where} ORDER BY guild_id, channel_id", params
    ).fetchall()
    return [_row(row) for row in rows]


def _load_static(
    db: sqlite3.Connection, wanted: dict[tuple[int, int], BridgeMapping]
) -> StaticLoad:
    applied: MappingList = []
    removed: MappingList = []
    shadowed: MappingList = []
    with _transaction(db):
        current = {(m.guild_id, m.channel_id): m for m in _select(db, "", ())}
        for key, row in current.items():
            if row.from_config and key not in wanted:
                db.execute(
                    "DELETE FROM channel_mappings WHERE guild_id = ? AND channel_id = ?", key
                )
                removed.append(row)
        for key, entry in wanted.items():
            existing = current.get(key)
            if existing is not None and not existing.from_config:
                shadowed.append(existing)
            elif (
                existing is not None and existing.room == entry.room and existing.mode == entry.mode
            ):
                applied.append(existing)  # unchanged: keep its created_at
            else:
                applied.append(_upsert(db, *key, entry.room, entry.mode, CONFIG_CREATOR))
    return StaticLoad(tuple(applied), tuple(removed), tuple(shadowed))


# -- the store --------------------------------------------------------------------------------


class MappingStore:
    """Channel-to-room mappings in one SQLite file. Create with `await MappingStore.open(path)`."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._path = path
        self._executor = executor
        self._db = db
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, busy_timeout_s: float = BUSY_TIMEOUT_S
    ) -> Self:
        """Open (creating the file and its directory) and migrate to the current schema."""
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mapping-store")
        try:
            db = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, path, busy_timeout_s
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    @property
    def path(self) -> Path:
        return self._path

    @validate_call(config=ConfigDict(strict=True))
    async def link(
        self,
        guild_id: Snowflake,
        channel_id: Snowflake,
        room: RoomName,
        mode: BridgeMode,
        created_by: Annotated[str, Field(min_length=1)],
    ) -> ChannelMapping:
        """Map a channel to a room, replacing any mapping it had.

        Raises `pydantic.ValidationError` (a ValueError) for an invalid id, room or mode.
        """
        return await self._run(_link, guild_id, channel_id, room, mode, created_by)

    async def unlink(self, guild_id: int, channel_id: int) -> bool:
        """Remove a channel's mapping; False if it had none."""
        return await self._run(_unlink, guild_id, channel_id)

    async def get(self, guild_id: int, channel_id: int) -> ChannelMapping | None:
        found = await self._run(
            _select, "WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        )
        return found[0] if found else None

    async def list(self, guild_id: int) -> MappingList:
        """A guild's mappings, by channel id."""
        return await self._run(_select, "WHERE guild_id = ?", (guild_id,))

    async def list_all(self) -> MappingList:
        """Every mapping, by guild then channel id."""
        return await self._run(_select, "", ())

    async def by_room(self, room: str) -> MappingList:
        """The channels (of any guild) bridged into `room`."""
        return await self._run(_select, "WHERE room = ?", (room,))

    async def load_static(self, mappings: Iterable[BridgeMapping]) -> StaticLoad:
        """Make the config rows match config.toml's `[[bridges]]`; user mappings win (see above)."""
        wanted: dict[tuple[int, int], BridgeMapping] = {}
        for entry in mappings:
            key = (entry.guild_id, entry.channel_id)
            if key in wanted:
                raise ValueError(f"guild {key[0]} channel {key[1]} appears twice in the mappings")
            wanted[key] = entry
        result = await self._run(_load_static, wanted)
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

    async def close(self) -> None:
        """Finish the calls already made, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _run(self, operation: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise RuntimeError(f"mapping store {self._path} is closed")
        call = functools.partial(operation, self._db, *args)
        return cast(_T, await asyncio.get_running_loop().run_in_executor(self._executor, call))
