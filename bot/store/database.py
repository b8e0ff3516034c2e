"""`Database`: what the store needs from a backend (SQLite or Postgres), and nothing more.

The store's operations are written once against this; each backend owns its connections,
turns its driver's errors into `StoreError`, and keeps the schema version its own way.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .dialect import Dialect

__all__ = ["Database", "Transaction"]

Row = tuple[Any, ...]


class Transaction(Protocol):
    """Statements inside one transaction: all of them commit, or none. A statement the
    database refuses raises `StoreError` (and the transaction rolls back)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Rows of a SELECT or of a statement with RETURNING."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...


class Database(Protocol):
    dialect: Dialect
    where: str
    """The path, or `user@host:port/database` (never a password): for messages and logs."""

    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[Transaction]:
        """A transaction. Write transactions run one at a time across every process using the
        database, so a read-then-write inside one sees no other writer in between."""
        ...

    async def schema_version(self, tx: Transaction) -> int: ...

    async def set_schema_version(self, tx: Transaction, version: int) -> None: ...

    async def close(self) -> None:
        """Wait for the calls already made, then release the connections. Idempotent."""
        ...
