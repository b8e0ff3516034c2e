"""The Postgres backend against a real server: failures that only a server can have (down,
refusing the login, restarting under an open store), its migrations, and the password in
DATABASE_URL never showing in an error or a log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from bot.config import load_settings
from bot.store import MIGRATIONS, MappingStore, Migration, StoreError
from bot.store import migrations as migrations_module
from tests.support.postgres import PostgresServer, free_port

GUILD = 1100000000000000001


@pytest.fixture
async def url(postgres_server: PostgresServer) -> str:
    return await postgres_server.create_database()


@pytest.fixture
async def store(url: str) -> AsyncIterator[MappingStore]:
    opened = await MappingStore.open_postgres(url)
    yield opened
    await opened.close()


async def table_names(url: str) -> list[str]:
    db = await asyncpg.connect(url)
    try:
        rows = await db.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return [row[0] for row in rows]
    finally:
        await db.close()


def assert_one_line(error: StoreError, where: str, *, hidden: str) -> None:
    message = str(error)
    assert message.startswith(f"{where}: ") and error.where == where
    assert "\n" not in message
    assert hidden not in message and hidden not in repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# -- a server that cannot be used ---------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_an_unreachable_server_is_one_line_naming_the_host(
    postgres_server: PostgresServer,
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgres://switchboard:{postgres_server.password}@127.0.0.1:{port}/app"
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        await MappingStore.open_postgres(url)
    assert time.monotonic() - started < 10
    assert_one_line(
        err.value, f"postgres://switchboard@127.0.0.1:{port}/app", hidden=postgres_server.password
    )
    assert "connection refused" in str(err.value)


@pytest.mark.timeout(20)
async def test_a_refused_login_names_the_server_and_hides_the_password(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-password-sentinel"
    url = postgres_server.url(password=wrong)
    with pytest.raises(StoreError) as err:
        await MappingStore.open_postgres(url)
    where = f"postgresql://switchboard@127.0.0.1:{postgres_server.port}/postgres"
    assert_one_line(err.value, where, hidden=wrong)
    assert "login refused" in str(err.value)
    assert wrong not in caplog.text


@pytest.mark.timeout(20)
async def test_a_missing_database_is_named(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError) as err:
        await MappingStore.open_postgres(postgres_server.url("no_such_db"))
    assert_one_line(
        err.value,
        f"postgresql://switchboard@127.0.0.1:{postgres_server.port}/no_such_db",
        hidden=postgres_server.password,
    )
    assert "no such database" in str(err.value)


@pytest.mark.timeout(90)
async def test_an_open_store_fails_cleanly_while_the_server_is_down_and_recovers(
    postgres_server: PostgresServer, store: MappingStore
) -> None:
    linked = await store.link(GUILD, 1, "lobby", "manual", "1")
    await asyncio.to_thread(postgres_server.stop)
    try:
        with pytest.raises(StoreError) as err:
            await store.list_all()
        assert_one_line(err.value, store.where, hidden=postgres_server.password)
    finally:
        await asyncio.to_thread(postgres_server.start)
    # The same store, without reopening: the pool connects again.
    assert await store.list_all() == [linked]
    await store.link(GUILD, 2, "lobby", "manual", "1")
    assert len(await store.by_room("lobby")) == 2


@pytest.mark.timeout(90)
async def test_an_open_store_outlives_a_server_restart(
    postgres_server: PostgresServer, store: MappingStore
) -> None:
    await store.link(GUILD, 1, "lobby", "manual", "1")
    await asyncio.to_thread(postgres_server.restart)
    assert [m.channel_id for m in await store.list_all()] == [1]


@pytest.mark.timeout(30)
async def test_the_password_never_reaches_the_logs(
    postgres_server: PostgresServer, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with await MappingStore.open_postgres(url) as store:
        await store.link(GUILD, 1, "lobby", "manual", "1")
        await store.load_static([])
        code = await store.create_share_code("lobby", "1")
        await store.redeem_share_code(code.code, GUILD + 1, "2")
        assert postgres_server.password not in store.where
    assert caplog.records, "the store logs what it does"
    assert postgres_server.password not in caplog.text
    for record in caplog.records:
        assert postgres_server.password not in repr(record.args)


# -- migrations on Postgres ---------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_new_database_gets_the_current_schema(url: str) -> None:
    async with await MappingStore.open_postgres(url):
        pass
    assert await table_names(url) == [
        "channel_mappings",
        "invites",
        "room_shares",
        "rooms",
        "share_codes",
        "switchboard_schema_version",
    ]
    db = await asyncpg.connect(url)
    try:
        assert await db.fetchval("SELECT version FROM switchboard_schema_version") == len(
            MIGRATIONS
        )
    finally:
        await db.close()


@pytest.mark.timeout(30)
async def test_a_failing_migration_leaves_the_database_as_it_was(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:1])
    async with await MappingStore.open_postgres(url):
        pass
    before = await table_names(url)
    broken = Migration(
        "half done", ("CREATE TABLE half_done (x INTEGER)", "INSERT INTO missing VALUES (1)")
    )
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(StoreError, match=r"migration 3 failed.*schema version 1.*missing"):
        await MappingStore.open_postgres(url)
    assert await table_names(url) == before  # neither migration 2 nor 3 left a trace

    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS)
    async with await MappingStore.open_postgres(url) as store:
        assert await store.list_all() == []
    assert "rooms" in await table_names(url)


@pytest.mark.timeout(30)
async def test_a_database_from_a_newer_release_is_refused(url: str) -> None:
    async with await MappingStore.open_postgres(url):
        pass
    db = await asyncpg.connect(url)
    try:
        await db.execute("UPDATE switchboard_schema_version SET version = 99")
    finally:
        await db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await MappingStore.open_postgres(url)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_database_url_in_the_environment_selects_postgres(url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "unused.sqlite3"}"\n')
    settings = load_settings(config, {"DATABASE_URL": url})
    async with await MappingStore.from_settings(settings.store) as store:
        assert store.backend == "postgres"
        await store.link(GUILD, 1, "lobby", "manual", "1")
    async with await MappingStore.open_postgres(url) as again:
        assert [m.room for m in await again.list_all()] == ["lobby"]
    assert not (tmp_path / "unused.sqlite3").exists()
