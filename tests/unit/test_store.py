"""bot/store.py on real SQLite files: persistence, concurrency, migrations, static mappings."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bot import store as store_module
from bot.config import BridgeMapping
from bot.store import CONFIG_CREATOR, MIGRATIONS, ChannelMapping, MappingStore, StoreError

GUILD = 1100000000000000001
OTHER_GUILD = 1100000000000000002

# The schema as migration 1 shipped it: a database made by that release looks like this.
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
    (1100000000000000001, 8, 'games', 'manual', 'config', '2026-01-02T03:04:06+00:00');
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


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = await MappingStore.open(tmp_path / "var" / "switchboard.sqlite3")
    yield opened
    await opened.close()


# -- basics -------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_open_creates_the_directory_and_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "store.sqlite3"
    async with await MappingStore.open(path) as store:
        assert store.path == path
        assert await store.list_all() == []
    assert path.exists()
    assert user_version(path) == len(MIGRATIONS)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


@pytest.mark.timeout(10)
async def test_link_get_list_unlink(store: MappingStore) -> None:
    before = time.time()
    linked = await store.link(GUILD, 10, "lobby", "auto", "4242")
    assert isinstance(linked, ChannelMapping)
    assert (linked.guild_id, linked.channel_id, linked.room, linked.mode, linked.created_by) == (
        GUILD,
        10,
        "lobby",
        "auto",
        "4242",
    )
    assert before - 1 <= linked.created_at.timestamp() <= time.time() + 1
    assert linked.created_at.tzinfo is not None
    assert not linked.from_config
    await store.link(GUILD, 11, "games", "manual", "4242")
    await store.link(OTHER_GUILD, 12, "lobby", "manual", "77")

    assert await store.get(GUILD, 10) == linked
    assert await store.get(GUILD, 99) is None
    assert [m.channel_id for m in await store.list(GUILD)] == [10, 11]
    assert [m.channel_id for m in await store.list(OTHER_GUILD)] == [12]
    assert [(m.guild_id, m.channel_id) for m in await store.by_room("lobby")] == [
        (GUILD, 10),
        (OTHER_GUILD, 12),
    ]
    assert len(await store.list_all()) == 3

    assert await store.unlink(GUILD, 10) is True
    assert await store.unlink(GUILD, 10) is False
    assert await store.get(GUILD, 10) is None
    assert [m.channel_id for m in await store.list(GUILD)] == [11]


@pytest.mark.timeout(10)
async def test_link_replaces_a_channels_mapping(store: MappingStore) -> None:
    await store.link(GUILD, 10, "lobby", "auto", "1")
    again = await store.link(GUILD, 10, "stage", "manual", "2")
    assert (again.room, again.mode, again.created_by) == ("stage", "manual", "2")
    assert await store.list(GUILD) == [again]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "args",
    [
        (GUILD, 10, "Bad Room!", "manual", "1"),
        (GUILD, 10, "x" * 65, "manual", "1"),
        (GUILD, 10, "", "manual", "1"),
        (GUILD, 10, "lobby", "sometimes", "1"),
        (GUILD, 10, "lobby", "manual", ""),
        (0, 10, "lobby", "manual", "1"),
        (GUILD, True, "lobby", "manual", "1"),
        (GUILD, "10", "lobby", "manual", "1"),
    ],
)
async def test_link_refuses_invalid_values(store: MappingStore, args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        await store.link(*args)
    assert await store.list_all() == []


@pytest.mark.timeout(10)
async def test_mappings_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = await MappingStore.open(path)
    first = await store.link(GUILD, 10, "lobby", "auto", "1")
    await store.link(GUILD, 11, "games", "manual", "2")
    await store.unlink(GUILD, 11)
    await store.close()

    reopened = await MappingStore.open(path)
    try:
        assert await reopened.list_all() == [first]
    finally:
        await reopened.close()


@pytest.mark.timeout(10)
async def test_a_closed_store_refuses_calls_and_closes_once(tmp_path: Path) -> None:
    store = await MappingStore.open(tmp_path / "s.sqlite3")
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.list_all()


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_fifty_concurrent_writers_lose_nothing(store: MappingStore) -> None:
    await asyncio.gather(
        *(
            store.link(GUILD, channel, f"room-{channel}", "manual", str(channel))
            for channel in range(1, 51)
        )
    )
    mappings = await store.list(GUILD)
    assert [(m.channel_id, m.room) for m in mappings] == [(c, f"room-{c}") for c in range(1, 51)]

    # Mixed writes on the same rows: every unlink and relink lands, in call order.
    await asyncio.gather(
        *(store.unlink(GUILD, c) for c in range(1, 26)),
        *(store.link(GUILD, c, "moved", "auto", "9") for c in range(26, 51)),
    )
    assert [(m.channel_id, m.room) for m in await store.list(GUILD)] == [
        (c, "moved") for c in range(26, 51)
    ]


@pytest.mark.timeout(30)
async def test_two_stores_on_one_file_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = await asyncio.gather(MappingStore.open(path), MappingStore.open(path))
    try:
        await asyncio.gather(
            *(first.link(GUILD, c, "first", "manual", "1") for c in range(1, 51)),
            *(second.link(OTHER_GUILD, c, "second", "auto", "2") for c in range(1, 51)),
            *(first.link(GUILD, c, "both", "manual", "1") for c in range(100, 110)),
            *(second.link(GUILD, c, "both", "manual", "2") for c in range(110, 120)),
        )
        for store in (first, second):
            assert len(await store.list(GUILD)) == 70
            assert len(await store.list(OTHER_GUILD)) == 50
            assert len(await store.by_room("both")) == 20
    finally:
        await first.close()
        await second.close()


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


# -- migrations ---------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_a_version_1_database_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_database(path)
    async with await MappingStore.open(path) as store:
        lobby = await store.get(GUILD, 7)
        assert lobby is not None
        assert (lobby.room, lobby.mode, lobby.created_by) == ("lobby", "auto", "42")
        assert lobby.created_at.isoformat() == "2026-01-02T03:04:05+00:00"
        assert [m.channel_id for m in await store.list(GUILD)] == [7, 8]
        await store.link(GUILD, 9, "new", "manual", "1")
    assert user_version(path) == len(MIGRATIONS)


def _migration_2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE channel_mappings ADD COLUMN note TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE channel_mappings SET note = 'from v1'")


@pytest.mark.timeout(10)
async def test_an_appended_migration_upgrades_a_version_1_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_database(path)
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, _migration_2))
    async with await MappingStore.open(path) as store:
        assert [m.room for m in await store.list(GUILD)] == ["lobby", "games"]
    assert user_version(path) == 2
    db = sqlite3.connect(path)
    assert db.execute("SELECT DISTINCT note FROM channel_mappings").fetchall() == [("from v1",)]
    db.close()
    # Opening again applies nothing twice.
    async with await MappingStore.open(path) as store:
        assert len(await store.list_all()) == 2
    assert user_version(path) == 2


@pytest.mark.timeout(10)
async def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_database(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("stopped half-way")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, _migration_2, broken))
    with pytest.raises(StoreError, match=r"migration 3 failed.*schema version 1.*half-way"):
        await MappingStore.open(path)
    # Migrations 2 and 3 ran in one transaction: neither left a trace.
    assert user_version(path) == 1
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(channel_mappings)")]
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    db.close()
    assert "note" not in columns
    assert tables == ["channel_mappings"]
    # With the bug fixed, the next start upgrades it.
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, _migration_2))
    async with await MappingStore.open(path) as store:
        assert len(await store.list_all()) == 2
    assert user_version(path) == 2


@pytest.mark.timeout(10)
async def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    make_v1_database(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await MappingStore.open(path)


@pytest.mark.timeout(10)
async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for" * 100)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        await MappingStore.open(path)


# -- static mappings from config.toml -----------------------------------------------------------


def bridge(channel_id: int, room: str, mode: str = "manual") -> BridgeMapping:
    return BridgeMapping(guild_id=GUILD, channel_id=channel_id, room=room, mode=mode)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
async def test_static_mappings_are_loaded_as_config_rows(store: MappingStore) -> None:
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games", "auto")])
    assert [(m.channel_id, m.room, m.mode) for m in result.applied] == [
        (1, "lobby", "manual"),
        (2, "games", "auto"),
    ]
    assert result.removed == () and result.shadowed == ()
    assert all(m.created_by == CONFIG_CREATOR and m.from_config for m in await store.list(GUILD))


@pytest.mark.timeout(10)
async def test_static_reload_follows_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await MappingStore.open(path)
    await store.load_static([bridge(1, "lobby"), bridge(2, "games"), bridge(3, "old")])
    unchanged = await store.get(GUILD, 1)
    await store.close()

    # Next start: entry 2 changed, entry 3 removed from the file, entry 4 added.
    store = await MappingStore.open(path)
    try:
        result = await store.load_static(
            [bridge(1, "lobby"), bridge(2, "games", "auto"), bridge(4, "new")]
        )
        assert [m.channel_id for m in result.removed] == [3]
        assert [(m.channel_id, m.room, m.mode) for m in await store.list(GUILD)] == [
            (1, "lobby", "manual"),
            (2, "games", "auto"),
            (4, "new", "manual"),
        ]
        assert await store.get(GUILD, 1) == unchanged  # created_at kept when nothing changed
        # An empty [[bridges]] list removes every config row.
        result = await store.load_static([])
        assert len(result.removed) == 3
        assert await store.list_all() == []
    finally:
        await store.close()


@pytest.mark.timeout(10)
async def test_static_load_never_touches_user_mappings(store: MappingStore) -> None:
    mine = await store.link(GUILD, 1, "mine", "auto", "4242")
    other = await store.link(GUILD, 5, "elsewhere", "manual", "4242")
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    assert result.shadowed == (mine,)
    assert [m.channel_id for m in result.applied] == [2]
    assert await store.get(GUILD, 1) == mine
    # Removing everything from the config leaves user rows alone.
    await store.load_static([])
    assert await store.list(GUILD) == [mine, other]


@pytest.mark.timeout(10)
async def test_users_can_take_over_or_unlink_config_mappings(store: MappingStore) -> None:
    await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    taken = await store.link(GUILD, 1, "mine", "auto", "4242")
    assert await store.unlink(GUILD, 2)
    # At the next start the user's mapping stays; the unlinked config entry comes back.
    result = await store.load_static([bridge(1, "lobby"), bridge(2, "games")])
    assert result.shadowed == (taken,)
    assert [(m.channel_id, m.room, m.created_by) for m in await store.list(GUILD)] == [
        (1, "mine", "4242"),
        (2, "games", CONFIG_CREATOR),
    ]


@pytest.mark.timeout(10)
async def test_static_load_refuses_a_channel_twice(store: MappingStore) -> None:
    with pytest.raises(ValueError, match="twice"):
        await store.load_static([bridge(1, "a"), bridge(1, "b")])
    assert await store.list_all() == []
