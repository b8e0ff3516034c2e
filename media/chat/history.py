"""`ChatHistory`: the last messages of each room, for whoever joins next.

The room keeps them, not a process: with `REDIS_URL` every process reads and writes the same
history (`RedisChatHistory`), and a message is recorded once however many members saw it
(recording is idempotent by message id, so every receiver that is ours may record what it
heard). Edits and deletions amend what is kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import replace

from .message import ChatDelete, ChatEdit, ChatMessage

__all__ = ["HISTORY_LIMIT", "ChatHistory", "InMemoryChatHistory"]

HISTORY_LIMIT = 100
"""Messages kept per room; a newcomer is shown the most recent of them."""


class ChatHistory(ABC):
    @abstractmethod
    async def record(self, room: str, message: ChatMessage) -> None:
        """Keep `message` (again: nothing changes) and drop the oldest beyond the limit."""

    @abstractmethod
    async def amend(self, room: str, change: ChatEdit | ChatDelete) -> None:
        """Apply an edit or a deletion to a kept message; one not kept is ignored."""

    @abstractmethod
    async def recent(self, room: str, limit: int = HISTORY_LIMIT) -> list[ChatMessage]:
        """The newest `limit` messages, oldest first."""


class InMemoryChatHistory(ChatHistory):
    """One process's history; enough while one process serves every room."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self._limit = limit
        self._rooms: dict[str, OrderedDict[str, ChatMessage]] = {}

    async def record(self, room: str, message: ChatMessage) -> None:
        kept = self._rooms.setdefault(room, OrderedDict())
        if message.id in kept:
            return
        kept[message.id] = message
        while len(kept) > self._limit:
            kept.popitem(last=False)

    async def amend(self, room: str, change: ChatEdit | ChatDelete) -> None:
        kept = self._rooms.get(room)
        if kept is None or change.id not in kept:
            return
        if isinstance(change, ChatDelete):
            del kept[change.id]
        else:
            kept[change.id] = replace(kept[change.id], text=change.text)

    async def recent(self, room: str, limit: int = HISTORY_LIMIT) -> list[ChatMessage]:
        kept = self._rooms.get(room)
        if not kept or limit <= 0:
            return []
        return list(kept.values())[-limit:]
