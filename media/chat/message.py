"""What a room's chat carries: versioned JSON text messages on DataChannels.

Every chatting member publishes one channel named `CHAT_CHANNEL`; what it sends there reaches
everyone subscribed to it, through Cloudflare Realtime or the local SFU, which relay bytes and
look at nothing. So each receiver checks what arrives: `decode` refuses anything oversized or
malformed with a reason, and skips (returns None) a version or type it does not know, so a
newer release's extras are ignored rather than fatal.

Wire form (one JSON object per DataChannel message, UTF-8 text):

    {"v": 1, "type": "message", "id": "...", "author": {"name", "kind", "userId"?, "origin"?},
     "text": "...", "sentAt": 1733260000.5, "replyTo"?: "..."}
    {"v": 1, "type": "edit", "id": "...", "text": "...", "sentAt": ...}
    {"v": 1, "type": "delete", "id": "...", "sentAt": ...}

`author` is what the sender claims. Receivers believe it only from a bridge (a member of kind
Discord, which relays many people); anyone else is named by its room membership
(`media/chat/room_chat.py`).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

from media.ratelimit import RateSpec

__all__ = [
    "CHAT_CHANNEL",
    "CHAT_RATE",
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_WIRE_BYTES",
    "MESSAGE_VERSION",
    "AuthorKind",
    "ChatAuthor",
    "ChatDelete",
    "ChatEdit",
    "ChatFormatError",
    "ChatItem",
    "ChatMessage",
    "decode",
    "encode",
    "new_message_id",
]

MESSAGE_VERSION = 1
CHAT_CHANNEL = "chat"
"""The DataChannel name every chatting member publishes (one per member)."""
MAX_TEXT_CHARS = 2000
"""Discord's own limit for a message, so nothing the room says has to be cut for Discord."""
MAX_NAME_CHARS = 80
"""Discord's limit for a webhook's username."""
MAX_ID_CHARS = 64
MAX_WIRE_BYTES = 16 * 1024
"""Room for MAX_TEXT_CHARS of 4-byte characters, JSON-escaped, plus the envelope; well under
the 64 KiB that every SCTP implementation delivers in one message."""
CHAT_RATE = RateSpec(capacity=5, refill_per_s=0.5)
"""Messages per author: a burst of 5, then one every 2 s (Discord allows a webhook about 5
per 2 s, so a room never outruns the channels it is relayed to)."""


class ChatFormatError(ValueError):
    """A chat message that is not what the wire form says; the text says what is wrong."""


class AuthorKind(Enum):
    DISCORD = "discord"
    WEB = "web"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ChatAuthor:
    name: str
    kind: AuthorKind
    user_id: str | None = None
    """Discord user id, or the web participant id: stable within the room, never shown."""
    origin: str | None = None
    """Where a Discord author writes from (the server's name), shown when rooms span servers."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: str
    author: ChatAuthor
    text: str
    sent_at: float
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class ChatEdit:
    id: str
    """The message edited (only its own sender's edits are applied)."""
    text: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class ChatDelete:
    id: str
    sent_at: float


ChatItem = ChatMessage | ChatEdit | ChatDelete


def new_message_id() -> str:
    return secrets.token_urlsafe(12)


def encode(item: ChatItem) -> str:
    body: dict[str, Any] = {"v": MESSAGE_VERSION, "id": item.id, "sentAt": item.sent_at}
    match item:
        case ChatMessage(author=author, text=text, reply_to=reply_to):
            author_json: dict[str, Any] = {"name": author.name, "kind": author.kind.value}
            if author.user_id is not None:
                author_json["userId"] = author.user_id
            if author.origin is not None:
                author_json["origin"] = author.origin
            body |= {"type": "message", "author": author_json, "text": text}
            if reply_to is not None:
                body["replyTo"] = reply_to
        case ChatEdit(text=text):
            body |= {"type": "edit", "text": text}
        case ChatDelete():
            body["type"] = "delete"
    wire = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if len(wire.encode()) > MAX_WIRE_BYTES:
        raise ChatFormatError(f"message is over {MAX_WIRE_BYTES} bytes")
    return wire


def decode(wire: str | bytes) -> ChatItem | None:
    """The item `wire` carries; None for another version or type (skipped, not an error).

    Raises ChatFormatError naming what is wrong with anything else."""
    size = len(wire) if isinstance(wire, bytes) else len(wire.encode())
    if size > MAX_WIRE_BYTES:
        raise ChatFormatError(f"message is {size} bytes, over the {MAX_WIRE_BYTES} allowed")
    try:
        data = json.loads(wire)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChatFormatError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ChatFormatError("not a JSON object")
    if data.get("v") != MESSAGE_VERSION:
        return None
    kind = data.get("type")
    if kind not in ("message", "edit", "delete"):
        return None
    item_id = _text(data, "id", MAX_ID_CHARS, allow_empty=False)
    sent_at = data.get("sentAt")
    if (
        not isinstance(sent_at, int | float)
        or isinstance(sent_at, bool)
        or not math.isfinite(sent_at)
    ):
        raise ChatFormatError("sentAt must be a number of seconds")
    if kind == "delete":
        return ChatDelete(item_id, float(sent_at))
    text = _text(data, "text", MAX_TEXT_CHARS, allow_empty=False)
    if kind == "edit":
        return ChatEdit(item_id, text, float(sent_at))
    author = data.get("author")
    if not isinstance(author, dict):
        raise ChatFormatError("author must be an object")
    try:
        author_kind = AuthorKind(author.get("kind"))
    except ValueError:
        author_kind = AuthorKind.OTHER
    reply_to = data.get("replyTo")
    return ChatMessage(
        id=item_id,
        author=ChatAuthor(
            name=_text(author, "name", MAX_NAME_CHARS, allow_empty=False),
            kind=author_kind,
            user_id=_optional_text(author, "userId", MAX_ID_CHARS),
            origin=_optional_text(author, "origin", 100),
        ),
        text=text,
        sent_at=float(sent_at),
        reply_to=None if reply_to is None else _text(data, "replyTo", MAX_ID_CHARS, False),
    )


def _text(data: dict[str, Any], key: str, limit: int, allow_empty: bool) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ChatFormatError(f"{key} must be a string")
    if not value.strip() and not allow_empty:
        raise ChatFormatError(f"{key} is empty")
    if len(value) > limit:
        raise ChatFormatError(f"{key} is {len(value)} characters, over the {limit} allowed")
    return value


def _optional_text(data: dict[str, Any], key: str, limit: int) -> str | None:
    return None if data.get(key) is None else _text(data, key, limit, allow_empty=True)
