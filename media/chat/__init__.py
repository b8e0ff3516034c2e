"""Room chat over Realtime DataChannels: the wire form (message.py), and one member's chat in
a room (publishing its channel, hearing the others', history)."""

from .history import HISTORY_LIMIT, ChatHistory, InMemoryChatHistory
from .message import (
    CHAT_CHANNEL,
    CHAT_RATE,
    MAX_TEXT_CHARS,
    AuthorKind,
    ChatAuthor,
    ChatDelete,
    ChatEdit,
    ChatFormatError,
    ChatItem,
    ChatMessage,
    decode,
    encode,
    new_message_id,
)

__all__ = [
    "CHAT_CHANNEL",
    "CHAT_RATE",
    "HISTORY_LIMIT",
    "MAX_TEXT_CHARS",
    "AuthorKind",
    "ChatAuthor",
    "ChatDelete",
    "ChatEdit",
    "ChatFormatError",
    "ChatHistory",
    "ChatItem",
    "ChatMessage",
    "InMemoryChatHistory",
    "decode",
    "encode",
    "new_message_id",
]
