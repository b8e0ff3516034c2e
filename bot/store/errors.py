"""The store's exceptions: one for a database that cannot be used, and the refusals that the
commands built on the store turn into replies."""

from __future__ import annotations

from typing import Literal

__all__ = ["NoSuchRoom", "ShareCodeRefused", "StoreError"]


class StoreError(Exception):
    """The database cannot be used: unreachable, refused, damaged, or newer than this code.

    `str(error)` is one line that starts with `where` (the SQLite path, or the Postgres
    `user@host:port/database` without its password) and says the likely cause, so the service
    can print it as it is, without a traceback.
    """

    def __init__(self, where: str, message: str) -> None:
        message = " ".join(message.split())  # drivers' messages may span lines
        super().__init__(f"{where}: {message}")
        self.where = where
        self.detail = message


class NoSuchRoom(LookupError):
    """The room has no row in the store (nobody has linked or created it)."""

    def __init__(self, room: str) -> None:
        super().__init__(f"no room named {room!r}")
        self.room = room


ShareCodeProblem = Literal["unknown", "expired", "used", "owner"]


class ShareCodeRefused(Exception):
    """A share code was not accepted; `reason` says why (the code itself is never echoed)."""

    def __init__(self, reason: ShareCodeProblem) -> None:
        messages = {
            "unknown": "this share code does not exist",
            "expired": "this share code has expired",
            "used": "this share code has already been used",
            "owner": "this server owns the room already",
        }
        super().__init__(messages[reason])
        self.reason: ShareCodeProblem = reason
