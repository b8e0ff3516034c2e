"""The chat wire form: every item survives a round trip; an unknown version or type is skipped;
anything malformed or oversized is refused with a reason that names the field."""

from __future__ import annotations

import json

import pytest

from media.chat.message import (
    MAX_TEXT_CHARS,
    MAX_WIRE_BYTES,
    MESSAGE_VERSION,
    AuthorKind,
    ChatAuthor,
    ChatDelete,
    ChatEdit,
    ChatFormatError,
    ChatMessage,
    decode,
    encode,
    new_message_id,
)

pytestmark = pytest.mark.timeout(10)

AUTHOR = ChatAuthor("Zoë 🎧", AuthorKind.DISCORD, "1234", "Lounge server")
MESSAGE = ChatMessage("m1", AUTHOR, 'can you hear me? "quoted" \u202e', 1733260000.25, "m0")


@pytest.mark.parametrize(
    "item",
    [
        MESSAGE,
        ChatMessage("m2", ChatAuthor("Guest", AuthorKind.WEB), "x" * MAX_TEXT_CHARS, 1.0),
        ChatEdit("m1", "fixed", 2.0),
        ChatDelete("m1", 3.0),
    ],
)
def test_round_trip(item) -> None:
    wire = encode(item)
    assert decode(wire) == item
    assert decode(wire.encode()) == item


def test_the_longest_text_of_widest_characters_fits_the_wire() -> None:
    item = ChatMessage("m", AUTHOR, "\U0001f600" * MAX_TEXT_CHARS, 1.0)
    assert len(encode(item).encode()) <= MAX_WIRE_BYTES
    assert decode(encode(item)) == item


def test_ids_are_unique_and_short() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(0 < len(i) <= 64 for i in ids)


def test_an_unknown_author_kind_is_other() -> None:
    body = json.loads(encode(MESSAGE))
    body["author"]["kind"] = "bot"
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, ChatMessage)
    assert decoded.author.kind is AuthorKind.OTHER


@pytest.mark.parametrize(
    "body",
    [
        {**json.loads(encode(MESSAGE)), "v": MESSAGE_VERSION + 1},
        {**json.loads(encode(MESSAGE)), "type": "reaction"},
        {"v": MESSAGE_VERSION + 1, "anything": "goes"},
    ],
)
def test_another_version_or_type_is_skipped(body) -> None:
    assert decode(json.dumps(body)) is None


def _with(**changes) -> str:
    body = json.loads(encode(MESSAGE))
    body.update(changes)
    return json.dumps(body)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (_with(id=""), "id is empty"),
        (_with(id="x" * 65), "id is 65 characters"),
        (_with(text="   "), "text is empty"),
        (_with(text="x" * (MAX_TEXT_CHARS + 1)), f"over the {MAX_TEXT_CHARS} allowed"),
        (_with(text=7), "text must be a string"),
        (_with(sentAt="yesterday"), "sentAt must be a number"),
        (_with(sentAt=True), "sentAt must be a number"),
        (_with(author="Zoë"), "author must be an object"),
        (_with(author={"kind": "web"}), "name must be a string"),
        (_with(replyTo=""), "replyTo is empty"),
        ("x" * (MAX_WIRE_BYTES + 1), f"over the {MAX_WIRE_BYTES} allowed"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(wire, reason) -> None:
    with pytest.raises(ChatFormatError, match=reason):
        decode(wire)


def test_encoding_refuses_what_no_receiver_would_accept() -> None:
    with pytest.raises(ChatFormatError, match="bytes"):
        encode(ChatMessage("m", AUTHOR, "\U0001f600" * (MAX_WIRE_BYTES // 4 + 1), 1.0))
