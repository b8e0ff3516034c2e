"""Application commands as synced by the bot (bulk overwrite, global and per guild)."""

from __future__ import annotations

import asyncio
from typing import Any

from .state import SnowflakeGenerator

__all__ = ["CommandRegistry"]

CHAT_INPUT = 1


class CommandRegistry:
    def __init__(self, application_id: int, ids: SnowflakeGenerator) -> None:
        self._application_id = application_id
        self._ids = ids
        self._commands: dict[int | None, dict[tuple[str, int], dict[str, Any]]] = {}
        self._synced = asyncio.Event()

    def overwrite(
        self, payload: list[dict[str, Any]], guild_id: int | None
    ) -> list[dict[str, Any]]:
        """PUT .../commands: replace the scope's set; a name keeps its id, as on Discord."""
        previous = self._commands.get(guild_id, {})
        current: dict[tuple[str, int], dict[str, Any]] = {}
        for command in payload:
            key = (command["name"], command.get("type", CHAT_INPUT))
            old = previous.get(key)
            stored = {
                "type": CHAT_INPUT,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": old["id"] if old else str(self._ids.next()),
                "application_id": str(self._application_id),
                "version": str(self._ids.next()),
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            current[key] = stored
        self._commands[guild_id] = current
        self._synced.set()
        return list(current.values())

    def list(self, guild_id: int | None) -> list[dict[str, Any]]:
        return list(self._commands.get(guild_id, {}).values())

    def find(self, name: str, guild_id: int) -> dict[str, Any] | None:
        """The slash command a user in `guild_id` would pick: guild scope shadows global."""
        for scope in (guild_id, None):
            command = self._commands.get(scope, {}).get((name, CHAT_INPUT))
            if command is not None:
                return command
        return None

    async def wait_synced(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._synced.wait()
