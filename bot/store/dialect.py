"""`Dialect`: the few words in which SQLite and Postgres differ, so that the schema and every
query are written once.

Queries use Postgres' numbered parameters (`$1`); for SQLite, `bind` turns them into plain
`?` with the arguments in order. Migrations may use these tokens (`str.format` fields):

- `{snowflake}`: a 64-bit Discord id (SQLite STRICT tables know only INTEGER, which is 64-bit).
- `{timestamp}`: a moment; SQLite keeps ISO-8601 text in UTC (which sorts in time order),
  Postgres a timestamptz.
- `{strict}`: SQLite's STRICT table option (type-checked columns); nothing on Postgres.
- `{room_name:COLUMN}`: the room-name rule (`[a-z0-9_-]{1,64}`) as a CHECK on COLUMN.

A literal brace in a migration is doubled (`{{`), as in any format string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

_NUMBERED_PARAMETER = re.compile(r"\$(\d+)")


class _RoomNameRule:
    """Formats as a CHECK expression on the column named in the format spec."""

    def __init__(self, template: str) -> None:
        self._template = template

    def __format__(self, column: str) -> str:
        return self._template.format(column=column)


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    snowflake: str
    timestamp: str
    strict: str
    room_name: _RoomNameRule
    positional: bool
    """`$N` parameters become `?`, in order of appearance (SQLite)."""

    def render(self, statement: str) -> str:
        """A migration statement with this dialect's words filled in."""
        return statement.format(
            snowflake=self.snowflake,
            timestamp=self.timestamp,
            strict=self.strict,
            room_name=self.room_name,
        )

    def bind(self, sql: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        """The query and its arguments as this dialect's driver takes them."""
        if not self.positional:
            return sql, args
        # Python's sqlite3 binds only plain `?` from a sequence: one argument per occurrence.
        order: list[int] = []

        def placeholder(match: re.Match[str]) -> str:
            order.append(int(match.group(1)) - 1)
            return "?"

        text = _NUMBERED_PARAMETER.sub(placeholder, sql)
        return text, tuple(_sqlite_value(args[index]) for index in order)


def _sqlite_value(value: Any) -> Any:
    # Sortable UTC text: what the {timestamp} columns hold on SQLite.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


SQLITE = Dialect(
    name="sqlite",
    snowflake="INTEGER",
    timestamp="TEXT",
    strict="STRICT",
    room_name=_RoomNameRule(
        "length({column}) BETWEEN 1 AND 64 AND {column} NOT GLOB '*[^a-z0-9_-]*'"
    ),
    positional=True,
)

POSTGRES = Dialect(
    name="postgres",
    snowflake="BIGINT",
    timestamp="TIMESTAMPTZ",
    strict="",
    room_name=_RoomNameRule("{column} ~ '^[a-z0-9_-]{{1,64}}$'"),
    positional=False,
)
