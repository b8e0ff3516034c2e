"""One asyncio.Lock per Realtime session, so changes to a session never overlap.

Cloudflare runs one offer/answer state machine per session and rejects a change that
arrives mid-negotiation (406); a negotiation can span several requests (tracks/new, then
renegotiate), so the lock is reentrant for the task holding it: a caller can hold it across
the whole exchange and still call the client's methods inside.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["SessionLocks"]


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    owner: asyncio.Task[object] | None = None
    users: int = 0  # the holder plus waiters; at 0 the entry is dropped


class SessionLocks:
    """Locks keyed by session id, created on first use and dropped when nobody holds or
    waits for them, so a long-running process does not accumulate one per past session."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        task = asyncio.current_task()
        entry = self._entries.get(session_id)
        if entry is not None and task is not None and entry.owner is task:
            yield  # this task already holds it (asyncio.Lock itself would deadlock)
            return
        if entry is None:
            entry = self._entries[session_id] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                entry.owner = task
                try:
                    yield
                finally:
                    entry.owner = None
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[session_id]
