"""The SQLite backend on real files: the file itself, WAL, locking, migrations from files that
older releases made, and files that cannot be used. The contract both backends share is in
tests/integration/test_store_contract.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from bot.store import MIGRATIONS, MappingStore, Migration, StoreError
from bot.store import migrations as migrations_module

GUILD = 1100000000000000001
OTHER_GUILD = 1100000000000000002

# The schema as migration 1 shipped it (release ac1291b): a database made by it looks like this.
SCHEMA_V1 = """
CREATE TABLE channel_mappings (
    guild_id   INTEGER NOT NULL CHECK (guild_id > 0),
    channel_id INTEGER NOT NULL CHECK (channel_id > 0),
    room       TEXT NOT NULL
               CHECK (length(room) BETWEEN 1 AND 64 AND room NOT GLOB '*[^a-z0-9_-]*'),
    mode       TEXT NOT NULL CHECK (mode IN ('manual', 'auto')),
    created_by TEXT NOT NULL CHECK (created_by <> ''),
    created_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
) STRICT;
CREATE INDEX channel_mappings_by_room ON channel_mappings (room);
INSERT INTO channel_mappings VALUES
    (1100000000000000001, 7, 'lobby', 'auto', '42', '2026-01-02T03:04:05+00:00'),
    (1100000000000000001, 8, 'games', 'manual', 'config', '2026-01-02T03:04:06+00:00'),
    (1100000000000000002, 9, 'lobby', 'manual', '43', '2026-01-01T23:59:59.5+00:00'),
    (1100000000000000002, 3, 'games', 'manual', '43', '2026-01-02T03:04:06.000001+00:00');
PRAGMA user_version = 1;
"""


def make_v1_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def tables(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [row[0] for row in rows]
    finally:
        db.close()


NOTE_MIGRATION = Migration(
    "a note on each mapping",
    (
        "ALTER TABLE channel_mappings ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "UPDATE channel_mappings SET note = 'migrated'",
    ),
)


# -- the file -----------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_open_creates_the_directory_and_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "store.sqlite3"
    async with await MappingStore.open(path) as store:
        assert store.where == str(path) and store.backend == "sqlite"
        assert await store.list_all() == []
    assert path.exists()
    assert user_version(path) == len(MIGRATIONS)
    assert tables(path) == ["channel_mappings", "invites", "room_shares", "rooms", "share_codes"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


@pytest.mark.timeout(20)
async def test_a_locked_database_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await MappingStore.open(path)
    locked, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:  # another process, say, in a long write transaction
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(5)
        db.execute("COMMIT")
        db.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, 5)
        write = asyncio.create_task(store.link(GUILD, 1, "lobby", "manual", "1"))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the write waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not write.done()
        release.set()
        assert (await write).room == "lobby"
    finally:
        release.set()
        await asyncio.to_thread(holder.join)
        await store.close()


# -- migrations from older files ----------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_a_version_1_file_migrates_with_its_rows_and_room_owners(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_database(path)
    async with await MappingStore.open(path) as store:
        lobby = await store.get(GUILD, 7)
        assert lobby is not None
        assert (lobby.room, lobby.mode, lobby.created_by) == ("lobby", "auto", "42")
        assert lobby.created_at.isoformat() == "2026-01-02T03:04:05+00:00"
        assert [m.channel_id for m in await store.list(GUILD)] == [7, 8]
        # Owner = the guild that linked the room first (by time, whatever the text looks like).
        lobby_room, games_room = await store.get_room("lobby"), await store.get_room("games")
        assert lobby_room is not None and games_room is not None
        assert (lobby_room.owner_guild_id, lobby_room.created_by) == (OTHER_GUILD, "43")
        assert (games_room.owner_guild_id, games_room.created_by) == (GUILD, "config")
        await store.link(GUILD, 9, "new", "manual", "1")
        assert await store.may_use_room("new", GUILD)
    assert user_version(path) == len(MIGRATIONS)


@pytest.mark.timeout(10)
async def test_an_appended_migration_upgrades_a_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "current.sqlite3"
    async with await MappingStore.open(path) as store:
        await store.link(GUILD, 1, "lobby", "manual", "1")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, NOTE_MIGRATION))
    async with await MappingStore.open(path) as store:
        assert [m.room for m in await store.list(GUILD)] == ["lobby"]
    assert user_version(path) == len(MIGRATIONS) + 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT DISTINCT note FROM channel_mappings").fetchall() == [("migrated",)]
    db.close()
    # Opening again applies nothing twice.
    async with await MappingStore.open(path) as store:
        assert len(await store.list_all()) == 1
    assert user_version(path) == len(MIGRATIONS) + 1


@pytest.mark.timeout(10)
async def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_database(path)
    broken = Migration(
        "half done", ("CREATE TABLE half_done (x INTEGER)", "INSERT INTO missing VALUES (1)")
    )
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(StoreError, match=r"migration 3 failed.*schema version 1.*missing") as err:
        await MappingStore.open(path)
    assert str(err.value).startswith(f"{path}: ")
    # Migrations 2 and 3 ran in one transaction: neither left a trace.
    assert user_version(path) == 1
    assert tables(path) == ["channel_mappings"]
    # With the bug fixed, the next start upgrades it.
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS)
    async with await MappingStore.open(path) as store:
        assert len(await store.list_all()) == 4
    assert user_version(path) == len(MIGRATIONS)


@pytest.mark.timeout(10)
async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    make_v1_database(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await MappingStore.open(path)


# -- files that cannot be used: one line naming the file and the likely cause -------------------


def assert_one_line_about(error: StoreError, path: Path, cause: str) -> None:
    message = str(error)
    assert message.startswith(f"{path}: ") and error.where == str(path)
    assert cause in message
    assert "\n" not in message
    # No chained sqlite3 traceback behind it.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.timeout(10)
async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for" * 100)
    with pytest.raises(StoreError) as err:
        await MappingStore.open(path)
    assert_one_line_about(err.value, path, "not an SQLite database")


@pytest.mark.timeout(10)
async def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite3"
    async with await MappingStore.open(path) as store:
        for channel in range(1, 200):
            await store.link(GUILD, channel, f"room-{channel}", "manual", "1")
    # Overwrite the middle of the file (table and index pages) with garbage, as a bad disk would.
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 2)
        file.write(b"\xa5" * 4096)
    with pytest.raises(StoreError) as err:
        await MappingStore.open(path)
    assert_one_line_about(err.value, path, "damaged")


@pytest.mark.timeout(10)
async def test_a_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.mkdir()
    with pytest.raises(StoreError) as err:
        await MappingStore.open(path)
    assert_one_line_about(err.value, path, "cannot open the file")


@pytest.mark.timeout(10)
async def test_a_directory_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    path = tmp_path / "plain-file" / "var" / "store.sqlite3"
    with pytest.raises(StoreError) as err:
        await MappingStore.open(path)
    assert_one_line_about(err.value, path, "a parent of the path is a file, not a directory")


@pytest.mark.timeout(10)
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file")
async def test_a_read_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    async with await MappingStore.open(path):
        pass
    path.chmod(0o400)
    with pytest.raises(StoreError) as err:
        await MappingStore.open(path)
    assert err.value.where == str(path)
