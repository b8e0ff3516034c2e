"""What stops a start that the operator can fix, said in one line: a port another process
holds, a mapping store that cannot be opened. `StartupError` carries that line; the command
line prints it and exits non-zero (see cli.py)."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from .store import MappingStore, StoreError

__all__ = ["StartupError", "listening", "open_store"]


class StartupError(Exception):
    """The service cannot start; the message is one line for the operator."""


@contextlib.asynccontextmanager
async def listening(host: str, port: int, setting: str, env: str) -> AsyncIterator[None]:
    """Turn a refused bind into a `StartupError` naming the setting that chose the port."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use by another process"
        raise StartupError(f"cannot listen on {host}:{port} ({setting}, env {env}): {why}") from exc


async def open_store(path: Path) -> MappingStore:
    """Open the mapping store, or raise a one-line `StartupError` naming the path and cause."""
    try:
        return await MappingStore.open(path)
    except StoreError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else None
        if cause is None:
            raise StartupError(f"mapping store: {exc}") from exc
        failure: BaseException = cause
    except (sqlite3.Error, OSError) as exc:
        failure = exc
    raise StartupError(
        f"mapping store {path} (store.path, env SWITCHBOARD_STORE_PATH) cannot be opened: "
        f"{failure} — {_likely_store_cause(failure)}"
    ) from failure


def _likely_store_cause(error: BaseException) -> str:
    text = str(error).lower()
    if isinstance(error, PermissionError) or "readonly" in text or "permission" in text:
        return "likely cause: this user may not write the file or its directory"
    if "not a database" in text or "malformed" in text:
        return (
            "likely cause: the file is damaged or is not a Switchboard SQLite store; "
            "restore a backup or point store.path at a new file"
        )
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return "likely cause: a parent of the path is a file, not a directory"
    if "unable to open" in text or isinstance(error, IsADirectoryError):
        return (
            "likely cause: the path is a directory, or a parent of it is not a writable directory"
        )
    if "disk" in text or isinstance(error, OSError):
        return "likely cause: the disk is full or failing, or the file system refuses writes"
    return "likely cause: the file is damaged or locked by another program"
