"""What stops a start that the operator can fix, said in one line: a port another process
holds, a mapping store that cannot be opened. `StartupError` carries that line; the command
line prints it and exits non-zero (see cli.py)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator

from .config import StoreSettings
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


async def open_store(settings: StoreSettings) -> MappingStore:
    """Open the mapping store, or raise a one-line `StartupError` naming where it is, the
    setting that chose it and the likely cause (the store explains its own failures)."""
    try:
        return await MappingStore.from_settings(settings)
    except StoreError as exc:
        setting = (
            "env DATABASE_URL"
            if settings.database_url is not None
            else "store.path, env SWITCHBOARD_STORE_PATH"
        )
        raise StartupError(
            f"mapping store {exc.where} ({setting}) cannot be opened: {exc.detail}"
        ) from None
