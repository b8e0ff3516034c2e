"""`SqliteDatabase`: the store in one SQLite file, the embedded default.

- One worker thread owns the connection, so no SQLite call ever blocks the event loop; an
  asyncio lock (fair, so calls keep their arrival order) lets one transaction at a time use it.
- WAL journal, synchronous=FULL: a committed write survives a crash. Write transactions are
  `BEGIN IMMEDIATE`; other processes or stores on the same file wait up to `busy_timeout_s`
  for the write lock instead of failing with "database is locked".
- The schema version is `PRAGMA user_version`.
- Every sqlite3 error becomes a one-line `StoreError` naming the file and the likely cause.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from .database import Row, Transaction
from .dialect import SQLITE
from .errors import StoreError

__all__ = ["BUSY_TIMEOUT_S", "SqliteDatabase"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
WAL_RETRY_S = 0.01

_T = TypeVar("_T")

_LIKELY_CAUSE = {
    sqlite3.SQLITE_NOTADB: "not an SQLite database (wrong path, or the file was overwritten)",
    sqlite3.SQLITE_CORRUPT: "the database file is damaged: restore a backup",
    sqlite3.SQLITE_CANTOPEN: "cannot open the file: check that it is a file, not a directory, "
    "and that the service may write to its directory",
    sqlite3.SQLITE_READONLY: "the file is read-only for the service: check its permissions",
    sqlite3.SQLITE_PERM: "permission denied: check the file's permissions",
    sqlite3.SQLITE_IOERR: "a disk I/O error: check the disk and the file system",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_BUSY: "another process held the database locked for too long",
}


def _explain(path: Path, exc: sqlite3.Error | OSError) -> StoreError:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return StoreError(str(path), "a parent of the path is a file, not a directory")
    if isinstance(exc, OSError):
        return StoreError(str(path), f"cannot create the store's directory: {exc.strerror}")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    cause = _LIKELY_CAUSE.get(primary) if primary is not None else None
    return StoreError(str(path), f"{cause} ({exc})" if cause else str(exc))


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each one opens BEGIN itself.
        db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise _explain(path, exc) from None
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _use_wal(db, path, busy_timeout_s)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        # A damaged page would otherwise surface later, in the middle of a command.
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(
                str(path), f"the database file is damaged: restore a backup ({problems[0]})"
            )
    except sqlite3.Error as exc:
        db.close()
        raise _explain(path, exc) from None
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
            raise StoreError(str(path), "could not switch to WAL mode: the file stayed locked")
        time.sleep(WAL_RETRY_S)


def _run(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> tuple[list[Row], int]:
    cursor = db.execute(sql, args)
    rows = cursor.fetchall()
    return rows, cursor.rowcount


def _end(db: sqlite3.Connection, commit: bool) -> None:
    try:
        if commit:
            db.execute("COMMIT")
    finally:
        if db.in_transaction:  # an error, or a COMMIT that failed
            db.execute("ROLLBACK")


class _SqliteTransaction:
    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows, _ = await self._database._statement(sql, args)
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        _, count = await self._database._statement(sql, args)
        return count


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self.where = str(path)
        self.path = path
        self._executor = executor
        self._db = db
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Self:
        """Open (creating the file and its directory); raise `StoreError` if it is unusable."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            db = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, path, busy_timeout_s
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_SqliteTransaction]:
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"store {self.where} is closed")
            # BEGIN sits inside the try: a caller cancelled while the worker thread runs it
            # must still roll back, or the connection would stay in a transaction. The
            # rollback queues behind whatever the thread is running, so it comes after.
            try:
                await self._call(self._db.execute, "BEGIN IMMEDIATE" if write else "BEGIN")
                yield _SqliteTransaction(self)
            except BaseException:
                await self._call(_end, self._db, False)
                raise
            await self._call(_end, self._db, True)

    async def schema_version(self, tx: Transaction) -> int:
        rows = await tx.fetch("PRAGMA user_version")
        return int(rows[0][0])

    async def set_schema_version(self, tx: Transaction, version: int) -> None:
        await tx.execute(f"PRAGMA user_version = {int(version)}")

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            finally:
                self._executor.shutdown(wait=False)

    async def _statement(self, sql: str, args: tuple[Any, ...]) -> tuple[list[Row], int]:
        return await self._call(_run, self._db, *SQLITE.bind(sql, args))

    async def _call(self, operation: Callable[..., _T], *args: Any) -> _T:
        call = functools.partial(operation, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
