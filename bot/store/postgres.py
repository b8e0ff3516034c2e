"""`PostgresDatabase`: the store on a Postgres server (asyncpg), chosen by `DATABASE_URL`.

- A small connection pool; asyncpg replaces a pooled connection that the server closed
  (a restart, a failover), so the store outlives a server restart: calls made while the
  server is down fail with `StoreError`, the next ones after it is back work.
- Write transactions first take one transaction-scoped advisory lock, so writers run one at a
  time across every process sharing the database, as they do on SQLite: a read-then-write
  (load_static, redeeming a share code) sees no other writer in between, and two services
  starting together do not both migrate.
- The schema version is the one row of `switchboard_schema_version`.
- The URL carries the password: only `describe_url()` (which leaves it out) ever reaches a
  message or a log line, and driver errors are re-worded with the password scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]

from .database import Row, Transaction
from .dialect import POSTGRES
from .errors import StoreError

__all__ = ["PostgresDatabase", "describe_url"]

logger = logging.getLogger(__name__)

POOL_SIZE = 4
CONNECT_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
WRITE_LOCK_KEY = 0x5357_4254_5354_4F52
"""Advisory lock id of the store's writers (any fixed 64-bit number; this one spells SWBTSTOR)."""

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def describe_url(url: str) -> str:
    """`scheme://user@host:port/database`: the URL without its password or query."""
    try:
        parts = urlsplit(url)
        user = f"{unquote(parts.username)}@" if parts.username else ""
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "DATABASE_URL (unparsable)"
    return f"{parts.scheme}://{user}{host}:{port}{parts.path}"


def _secrets_in(url: str) -> list[str]:
    """Everything in the URL that may be a password, to scrub from driver messages."""
    try:
        parts = urlsplit(url)
        given = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        found = [*given, *(unquote(secret) for secret in given)]  # as written and decoded
    except ValueError:
        found = []
    return [secret for secret in found if secret]


class _PostgresTransaction:
    def __init__(self, database: PostgresDatabase, connection: asyncpg.Connection) -> None:
        self._database = database
        self._connection = connection

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            records = await self._connection.fetch(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise self._database.error(exc) from None
        return [tuple(record) for record in records]

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._connection.execute(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise self._database.error(exc) from None
        count = status.rsplit(" ", 1)[-1]  # "DELETE 3", "INSERT 0 1", "CREATE TABLE"
        return int(count) if count.isdigit() else 0


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.where = describe_url(url)
        self._secrets = _secrets_in(url)
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Self:
        """Connect; raise a one-line `StoreError` naming the server when that fails."""
        where, secrets = describe_url(url), _secrets_in(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                # No connection floor: asyncpg would refill it in the background while the
                # server restarts, logging a traceback per try. The migration that follows
                # `open` connects at once anyway, so a bad URL still fails here.
                min_size=0,
                max_size=POOL_SIZE,
                timeout=connect_timeout_s,
                command_timeout=STATEMENT_TIMEOUT_S,
            )
        except (*_DRIVER_ERRORS, ValueError) as exc:
            raise StoreError(where, _explain(exc, secrets, connect_timeout_s)) from None
        logger.info("store connected where=%s", where)
        return cls(url, pool)

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_PostgresTransaction]:
        if self._closed:
            raise RuntimeError(f"store {self.where} is closed")
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if write:
                    await connection.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
                yield _PostgresTransaction(self, connection)
        except _DRIVER_ERRORS as exc:  # connecting, beginning or committing
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> StoreError:
        """A driver error as a one-line `StoreError`, without the password."""
        return StoreError(self.where, _explain(exc, self._secrets, None))

    async def schema_version(self, tx: Transaction) -> int:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS switchboard_schema_version (version INTEGER NOT NULL)"
        )
        rows = await tx.fetch("SELECT version FROM switchboard_schema_version")
        if not rows:
            await tx.execute("INSERT INTO switchboard_schema_version (version) VALUES (0)")
            return 0
        return int(rows[0][0])

    async def set_schema_version(self, tx: Transaction, version: int) -> None:
        await tx.execute("UPDATE switchboard_schema_version SET version = $1", version)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning("store connections did not close in time where=%s", self.where)
            self._pool.terminate()


def _explain(exc: BaseException, secrets: list[str], connect_timeout_s: float | None) -> str:
    if isinstance(exc, ConnectionRefusedError):
        text = "connection refused: is the Postgres server running and listening there?"
    elif isinstance(exc, socket.gaierror):
        text = "host not found (check the host name in DATABASE_URL)"
    elif isinstance(exc, TimeoutError):
        text = (
            f"no answer within {connect_timeout_s:.0f} s (server down, or a firewall?)"
            if connect_timeout_s is not None
            else "the server did not answer in time"
        )
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        text = f"login refused: check the user and password in DATABASE_URL ({exc})"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = f"no such database: create it first ({exc})"
    elif isinstance(exc, asyncpg.PostgresConnectionError | ConnectionError):
        text = f"the connection to the server was lost ({exc})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
