"""The in-memory chat history keeps the newest messages once each, and applies amendments.
(The shared one runs the same checks against a real redis-server in the integration tests.)"""

from __future__ import annotations

import pytest

from media.chat import AuthorKind, ChatAuthor, ChatDelete, ChatEdit, ChatMessage
from media.chat.history import InMemoryChatHistory

pytestmark = pytest.mark.timeout(10)

AUTHOR = ChatAuthor("Ann", AuthorKind.WEB, "p1")


def message(n: int) -> ChatMessage:
    return ChatMessage(f"m{n}", AUTHOR, f"text {n}", float(n))


async def test_newest_kept_oldest_first_once_each() -> None:
    history = InMemoryChatHistory(limit=3)
    for n in (1, 2, 2, 3, 4):
        await history.record("r", message(n))
    assert await history.recent("r") == [message(2), message(3), message(4)]
    assert await history.recent("r", limit=2) == [message(3), message(4)]
    assert await history.recent("other") == []


async def test_edits_and_deletions_amend_what_is_kept() -> None:
    history = InMemoryChatHistory()
    for n in (1, 2):
        await history.record("r", message(n))
    await history.amend("r", ChatEdit("m1", "edited", 5.0))
    await history.amend("r", ChatDelete("m2", 6.0))
    await history.amend("r", ChatDelete("unknown", 6.0))
    assert [(m.id, m.text) for m in await history.recent("r")] == [("m1", "edited")]
