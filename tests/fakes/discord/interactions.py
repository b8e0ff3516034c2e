"""Slash-command interactions: building INTERACTION_CREATE, and recording every response.

Discord's rules are enforced and breaches recorded in `InteractionRegistry.violations`
(answered as Discord answers them): one initial response only (400, code 40060), within the
acknowledgement deadline (404, code 10062), follow-ups and edits only after it (404, 10015).

Visibility follows Discord too: the first follow-up after a deferral does not make a new
message, it fills in the deferral's "thinking…" message and so keeps the deferral's
visibility whatever flags it sends (a public deferral makes an "ephemeral" error public).
`InteractionReply.ephemeral` is what users saw, `requested_ephemeral` what the bot asked for.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .commands import CommandRegistry
from .options import OptionValue, build_options
from .state import FakeChannel, FakeGuild, FakeUser, FakeWorld

__all__ = ["InteractionHandle", "InteractionRegistry", "InteractionReply", "ReplyKind"]

_log = logging.getLogger(__name__)

APPLICATION_COMMAND, APPLICATION_COMMAND_AUTOCOMPLETE = 2, 4
GUILD_CONTEXT = 0
CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_AUTOCOMPLETE_RESULT = 4, 5, 8
MESSAGE_TYPE_CHAT_INPUT_COMMAND = 20
FLAG_EPHEMERAL, FLAG_LOADING = 1 << 6, 1 << 7
ERROR_UNKNOWN_WEBHOOK, ERROR_UNKNOWN_INTERACTION, ERROR_ALREADY_ACKNOWLEDGED = 10015, 10062, 40060


class ReplyKind(enum.Enum):
    CALLBACK = "callback"  # POST /interactions/{id}/{token}/callback
    FOLLOWUP = "followup"  # POST /webhooks/{app}/{token}
    EDIT = "edit"  # PATCH /webhooks/{app}/{token}/messages/{id or @original}
    DELETE = "delete"  # DELETE /webhooks/{app}/{token}/messages/{id or @original}


@dataclass(frozen=True)
class InteractionReply:
    """One thing the bot did in answer to an interaction, with the body it sent."""

    interaction_id: int
    kind: ReplyKind
    body: dict[str, Any]
    message_id: int | None = None
    message_flags: int | None = None
    """Flags of the message this reply made or changed, as Discord shows it."""

    @property
    def callback_type(self) -> int | None:
        return self.body.get("type") if self.kind is ReplyKind.CALLBACK else None

    @property
    def data(self) -> dict[str, Any]:
        """The message part: a callback's `data`, or the whole body of the others."""
        if self.kind is ReplyKind.CALLBACK:
            return self.body.get("data") or {}
        return self.body

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.data.get("embeds") or []

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user saw it (the message's flags, not the request's)."""
        flags = self.message_flags if self.message_flags is not None else self.data.get("flags")
        return bool((flags or 0) & FLAG_EPHEMERAL)

    @property
    def requested_ephemeral(self) -> bool:
        return bool((self.data.get("flags") or 0) & FLAG_EPHEMERAL)

    @property
    def choices(self) -> list[dict[str, Any]]:
        """An autocomplete answer's choices ({name, value})."""
        return self.data.get("choices") or []

    @property
    def deferred(self) -> bool:
        return self.callback_type == CALLBACK_DEFERRED_MESSAGE

    def text(self) -> str:
        """Content plus embed titles and descriptions, for loose assertions."""
        parts = [self.content or ""]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f.get('name')}: {f.get('value')}" for f in embed.get("fields") or []]
        return "\n".join(p for p in parts if p)


@dataclass
class InteractionHandle:
    """An interaction the test injected; await what the bot answers."""

    id: int
    token: str
    guild_id: int
    channel_id: int
    command_name: str
    autocomplete: bool = False
    created_at: float = field(default_factory=time.monotonic)
    replies: list[InteractionReply] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    original_id: int | None = None
    _read: int = field(default=0, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def acknowledged(self) -> bool:
        return any(r.kind is ReplyKind.CALLBACK for r in self.replies)

    async def response(self, timeout: float = 5.0) -> InteractionReply:
        """The initial response (the callback), whenever it came."""
        return await self._wait(timeout, self._callback)

    async def next_reply(self, timeout: float = 5.0) -> InteractionReply:
        """Replies one by one in the order the bot sent them (callback, edits, follow-ups)."""

        def unread() -> InteractionReply | None:
            if self._read < len(self.replies):
                self._read += 1
                return self.replies[self._read - 1]
            return None

        return await self._wait(timeout, unread)

    async def final_text(self, timeout: float = 5.0) -> str:
        """What the user ends up reading: the callback's text, or (after a deferral or an
        empty callback) the first edit or follow-up with text."""

        def final() -> str | None:
            callback = self._callback()
            if callback is None:
                return None
            if not callback.deferred and callback.text():
                return callback.text()
            later = self.replies[self.replies.index(callback) + 1 :]
            texts = [
                r.text()
                for r in later
                if r.kind in (ReplyKind.EDIT, ReplyKind.FOLLOWUP) and r.text()
            ]
            return texts[0] if texts else None

        return await self._wait(timeout, final)

    def _callback(self) -> InteractionReply | None:
        return next((r for r in self.replies if r.kind is ReplyKind.CALLBACK), None)

    async def _wait[T](self, timeout: float, probe: Callable[[], T | None]) -> T:
        async with asyncio.timeout(timeout):
            while (found := probe()) is None:
                await self._changed.wait()
        return found

    def _record(self, reply: InteractionReply) -> None:
        self.replies.append(reply)
        # Wake every waiter, then arm a fresh event for the next reply.
        self._changed.set()
        self._changed = asyncio.Event()


class InteractionRegistry:
    def __init__(
        self, world: FakeWorld, commands: CommandRegistry, *, ack_deadline_s: float
    ) -> None:
        self._world = world
        self._commands = commands
        self._ack_deadline_s = ack_deadline_s
        self._by_id: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self._all_replies: asyncio.Queue[InteractionReply] = asyncio.Queue()
        self.violations: list[str] = []

    async def next_reply(self, timeout: float = 5.0) -> InteractionReply:
        async with asyncio.timeout(timeout):
            return await self._all_replies.get()

    # -- INTERACTION_CREATE ----------------------------------------------------------------

    def create(
        self,
        guild: FakeGuild,
        channel: FakeChannel,
        user: FakeUser,
        command_name: str,
        options: dict[str, OptionValue] | None = None,
        *,
        subcommand: str | None = None,
        group: str | None = None,
        focused: str | None = None,
    ) -> tuple[InteractionHandle, dict[str, Any]]:
        command = self._commands.find(command_name, guild.id)
        if command is None:
            raise LookupError(
                f"/{command_name} is not synced for guild {guild.id}: Discord would not offer it"
            )
        member = guild.members[user.id]
        permissions = guild.permissions_for(user.id)
        values, resolved = build_options(
            guild,
            command,
            options or {},
            subcommand=subcommand,
            group=group,
            permissions=permissions,
            focused=focused,
        )
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": values,
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        handle = InteractionHandle(
            self._world.ids.next(),
            secrets.token_urlsafe(24),
            guild.id,
            channel.id,
            command_name,
            autocomplete=focused is not None,
        )
        self._by_id[handle.id] = handle
        self._by_token[handle.token] = handle
        payload = {
            "id": str(handle.id),
            "application_id": str(self._world.bot.id),
            "type": APPLICATION_COMMAND if focused is None else APPLICATION_COMMAND_AUTOCOMPLETE,
            "token": handle.token,
            "version": 1,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.to_payload() | {"permissions": str(permissions)},
            "member": member.to_payload() | {"permissions": str(permissions)},
            "app_permissions": str(guild.permissions_for(self._world.bot.id)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": GUILD_CONTEXT,
            "attachment_size_limit": 10 * 1024 * 1024,
            "data": data,
        }
        return handle, payload

    # -- what the bot sends ----------------------------------------------------------------

    def callback(self, interaction_id: int, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        handle = self._by_id.get(interaction_id)
        if handle is None or handle.token != token:
            return 404, _error("Unknown interaction", ERROR_UNKNOWN_INTERACTION)
        if handle.acknowledged:
            self._violation(f"interaction {handle.command_name} ({handle.id}) responded to twice")
            return 400, _error(
                "Interaction has already been acknowledged.", ERROR_ALREADY_ACKNOWLEDGED
            )
        late = time.monotonic() - handle.created_at
        if late > self._ack_deadline_s:
            self._violation(
                f"interaction {handle.command_name} ({handle.id}) acknowledged after {late:.1f} s"
            )
            return 404, _error("Unknown interaction", ERROR_UNKNOWN_INTERACTION)
        callback_type = body.get("type")
        if (handle.autocomplete) != (callback_type == CALLBACK_AUTOCOMPLETE_RESULT):
            self._violation(
                f"interaction {handle.command_name} ({handle.id}) answered with callback type "
                f"{callback_type}: autocompletes take type 8 only, and only they do"
            )
            return 400, _error("Invalid interaction response type", 50035)
        message = None
        if callback_type in (CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE):
            data = dict(body.get("data") or {})
            if callback_type == CALLBACK_DEFERRED_MESSAGE:
                data["flags"] = (data.get("flags") or 0) | FLAG_LOADING
            message = self._new_message(handle, data)
            handle.original_id = int(message["id"])
        flags = (message or {}).get("flags", 0)
        self._record(
            handle,
            InteractionReply(handle.id, ReplyKind.CALLBACK, body, handle.original_id, flags),
        )
        response: dict[str, Any] = {
            "interaction": {
                "id": str(handle.id),
                "type": APPLICATION_COMMAND,
                "response_message_id": message["id"] if message else None,
                "response_message_loading": bool(flags & FLAG_LOADING),
                "response_message_ephemeral": bool(flags & FLAG_EPHEMERAL),
            }
        }
        if message is not None:
            response["resource"] = {"type": callback_type, "message": message}
        return 200, response

    def followup(self, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        handle = self._acknowledged(token)
        if handle is None:
            return 404, _error("Unknown Webhook", ERROR_UNKNOWN_WEBHOOK)
        original = handle.messages.get(handle.original_id) if handle.original_id else None
        if original is not None and original.get("flags", 0) & FLAG_LOADING:
            # Discord: this follow-up becomes the deferred message, with its visibility.
            message = original
            for key in ("content", "embeds", "components"):
                if key in body:
                    message[key] = body[key] or ([] if key != "content" else "")
            message["flags"] = message["flags"] & ~FLAG_LOADING
            message["edited_timestamp"] = _now()
        else:
            message = self._new_message(handle, body)
        self._record(
            handle,
            InteractionReply(
                handle.id, ReplyKind.FOLLOWUP, body, int(message["id"]), message.get("flags", 0)
            ),
        )
        return 200, message

    def edit(self, token: str, message_ref: str, body: dict[str, Any]) -> tuple[int, Any]:
        handle = self._acknowledged(token)
        message = self._message(handle, message_ref)
        if handle is None or message is None:
            return 404, _error("Unknown Message", 10008)
        for key in ("content", "embeds", "components", "attachments"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        message["flags"] = message.get("flags", 0) & ~FLAG_LOADING
        message["edited_timestamp"] = _now()
        self._record(
            handle,
            InteractionReply(
                handle.id, ReplyKind.EDIT, body, int(message["id"]), message.get("flags", 0)
            ),
        )
        return 200, message

    def get(self, token: str, message_ref: str) -> tuple[int, Any]:
        handle = self._by_token.get(token)
        message = self._message(handle, message_ref)
        if message is None:
            return 404, _error("Unknown Message", 10008)
        return 200, message

    def delete(self, token: str, message_ref: str) -> tuple[int, Any]:
        handle = self._acknowledged(token)
        message = self._message(handle, message_ref)
        if handle is None or message is None:
            return 404, _error("Unknown Message", 10008)
        del handle.messages[int(message["id"])]
        self._record(handle, InteractionReply(handle.id, ReplyKind.DELETE, {}, int(message["id"])))
        return 204, None

    # -- helpers ---------------------------------------------------------------------------

    def _acknowledged(self, token: str) -> InteractionHandle | None:
        handle = self._by_token.get(token)
        if handle is not None and not handle.acknowledged:
            self._violation(
                f"interaction {handle.command_name} ({handle.id}) followed up before responding"
            )
            return None
        return handle

    def _message(self, handle: InteractionHandle | None, ref: str) -> dict[str, Any] | None:
        if handle is None:
            return None
        message_id = handle.original_id if ref == "@original" else int(ref)
        return handle.messages.get(message_id) if message_id is not None else None

    def _new_message(self, handle: InteractionHandle, data: dict[str, Any]) -> dict[str, Any]:
        bot = self._world.bot
        message = {
            "id": str(self._world.ids.next()),
            "channel_id": str(handle.channel_id),
            "guild_id": str(handle.guild_id),
            "author": bot.to_payload(),
            "content": data.get("content") or "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": bool(data.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": data.get("embeds") or [],
            "components": data.get("components") or [],
            "pinned": False,
            "type": MESSAGE_TYPE_CHAT_INPUT_COMMAND,
            "flags": data.get("flags") or 0,
            "webhook_id": str(bot.id),
            "application_id": str(bot.id),
        }
        handle.messages[int(message["id"])] = message
        return message

    def _record(self, handle: InteractionHandle, reply: InteractionReply) -> None:
        _log.debug("interaction %s: %s %s", handle.id, reply.kind.value, reply.body)
        handle._record(reply)
        self._all_replies.put_nowait(reply)

    def _violation(self, text: str) -> None:
        _log.warning("Discord would reject this: %s", text)
        self.violations.append(text)


def _error(message: str, code: int) -> dict[str, Any]:
    return {"message": message, "code": code}


def _now() -> str:
    return datetime.now(UTC).isoformat()
