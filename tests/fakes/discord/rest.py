"""The REST subset discord.py 2.7.1 and a slash-command bot use, under /api/v10.

Every reply carries `Content-Type: application/json` exactly: discord.py's `json_or_text`
(http.py) compares the header for equality, so aiohttp's default `; charset=utf-8` would make
it hand back strings. Requests the fake does not know get Discord's 404 body and are listed in
`RestApi.unhandled`, so a test can see what the bot asked for.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .commands import CommandRegistry
from .interactions import InteractionRegistry
from .state import FakeWorld

__all__ = ["API_PREFIX", "RestApi"]

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
MESSAGE_TYPE_DEFAULT = 0


def _json(status: int, body: Any) -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return _json(status, {"message": message, "code": code})


async def _body(request: web.Request) -> dict[str, Any]:
    """JSON body, or the `payload_json` part of a multipart upload (messages with files)."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        raw = form.get("payload_json")
        return json.loads(raw) if isinstance(raw, str) else {}
    if not request.can_read_body:
        return {}
    return await request.json()


class RestApi:
    def __init__(
        self,
        world: FakeWorld,
        token: str,
        commands: CommandRegistry,
        interactions: InteractionRegistry,
    ) -> None:
        self._world = world
        self._token = token
        self._commands = commands
        self._interactions = interactions
        self.gateway_url = ""
        self.unhandled: list[str] = []
        self.channel_messages: list[dict[str, Any]] = []
        self.channel_message_edits = 0
        self._channel_message_added = asyncio.Event()

    async def next_channel_message(self, index: int, timeout: float = 5.0) -> dict[str, Any]:
        """The `index`-th message the bot posted to a channel (0-based), once it exists."""
        async with asyncio.timeout(timeout):
            while len(self.channel_messages) <= index:
                await self._channel_message_added.wait()
        return self.channel_messages[index]

    def add_routes(self, app: web.Application) -> None:
        bot_routes = [
            ("GET", "/users/@me", self._me),
            ("GET", "/users/{user_id}", self._user),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/applications/@me", self._application),
            ("GET", "/gateway", self._gateway),
            ("GET", "/gateway/bot", self._gateway_bot),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("GET", "/guilds/{guild_id}", self._guild),
            ("GET", "/guilds/{guild_id}/channels", self._guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self._guild_roles),
            ("GET", "/guilds/{guild_id}/members", self._guild_members),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._guild_member),
            ("GET", "/channels/{channel_id}", self._channel),
            ("POST", "/channels/{channel_id}/messages", self._post_channel_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_channel_message),
        ]
        # Interaction endpoints authenticate with the token in the path, not the bot token.
        token_routes = [
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message}", self._get_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message}", self._edit_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message}", self._delete_message),
        ]
        for method, path, handler in bot_routes:
            app.router.add_route(method, API_PREFIX + path, self._authenticated(handler))
        for method, path, handler in token_routes:
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._unhandled)

    def _authenticated(self, handler: Any) -> Any:
        async def check(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != f"Bot {self._token}":
                return _error(401, "401: Unauthorized")
            return await handler(request)

        return check

    async def _unhandled(self, request: web.Request) -> web.StreamResponse:
        what = f"{request.method} {request.path}"
        _log.warning("fake Discord has no route for %s", what)
        self.unhandled.append(what)
        return _error(404, "404: Not Found")

    # -- users, application, gateway -------------------------------------------------------

    async def _me(self, _: web.Request) -> web.Response:
        return _json(200, self._world.bot.to_me_payload())

    async def _user(self, request: web.Request) -> web.Response:
        user = self._world.users.get(int(request.match_info["user_id"]))
        return _json(200, user.to_payload()) if user else _error(404, "Unknown User", 10013)

    async def _application(self, _: web.Request) -> web.Response:
        bot = self._world.bot
        return _json(
            200,
            {
                "id": str(bot.id),
                "name": bot.username,
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": "00" * 32,
                "owner": bot.to_payload(),
                "team": None,
                "flags": 0,
                "bot": bot.to_payload(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
            },
        )

    async def _gateway(self, _: web.Request) -> web.Response:
        return _json(200, {"url": self.gateway_url})

    async def _gateway_bot(self, _: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json(200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    # -- application commands --------------------------------------------------------------

    def _scope(self, request: web.Request) -> int | None:
        guild_id = request.match_info.get("guild_id")
        return int(guild_id) if guild_id else None

    async def _get_commands(self, request: web.Request) -> web.Response:
        return _json(200, self._commands.list(self._scope(request)))

    async def _put_commands(self, request: web.Request) -> web.Response:
        payload = await request.json()
        return _json(200, self._commands.overwrite(payload, self._scope(request)))

    # -- guilds and channels ---------------------------------------------------------------

    def _guild_or_none(self, request: web.Request) -> Any:
        return self._world.guilds.get(int(request.match_info["guild_id"]))

    async def _guild(self, request: web.Request) -> web.Response:
        guild = self._guild_or_none(request)
        return _json(200, guild.to_rest_payload()) if guild else _error(404, "Unknown Guild", 10004)

    async def _guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild_or_none(request)
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        return _json(200, [c.to_payload() for c in guild.channels.values()])

    async def _guild_roles(self, request: web.Request) -> web.Response:
        guild = self._guild_or_none(request)
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        return _json(200, [r.to_payload() for r in guild.roles.values()])

    async def _guild_members(self, request: web.Request) -> web.Response:
        guild = self._guild_or_none(request)
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 1))
        members = sorted((m for m in guild.members.values() if m.id > after), key=lambda m: m.id)
        return _json(200, [m.to_payload() for m in members[:limit]])

    async def _guild_member(self, request: web.Request) -> web.Response:
        guild = self._guild_or_none(request)
        member = guild and guild.members.get(int(request.match_info["user_id"]))
        return _json(200, member.to_payload()) if member else _error(404, "Unknown Member", 10007)

    async def _channel(self, request: web.Request) -> web.Response:
        channel = self._world.channel(int(request.match_info["channel_id"]))
        return (
            _json(200, channel.to_payload()) if channel else _error(404, "Unknown Channel", 10003)
        )

    async def _post_channel_message(self, request: web.Request) -> web.Response:
        channel = self._world.channel(int(request.match_info["channel_id"]))
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        body = await _body(request)
        message = {
            "id": str(self._world.ids.next()),
            "channel_id": str(channel.id),
            "guild_id": str(channel.guild_id),
            "author": self._world.bot.to_payload(),
            "content": body.get("content") or "",
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": MESSAGE_TYPE_DEFAULT,
            "flags": body.get("flags") or 0,
        }
        self.channel_messages.append(message)
        self._channel_message_added.set()
        self._channel_message_added = asyncio.Event()
        return _json(200, message)

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        """Edits change the stored message in place (`channel_messages`) and count in
        `channel_message_edits`; only the bot's own messages can be edited, as on Discord."""
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        message = next(
            (
                m
                for m in self.channel_messages
                if m["id"] == message_id and m["channel_id"] == channel_id
            ),
            None,
        )
        if message is None:
            return _error(404, "Unknown Message", 10008)
        body = await _body(request)
        for key in ("content", "embeds", "components"):
            if key in body:
                empty: Any = "" if key == "content" else []
                message[key] = body[key] if body[key] is not None else empty
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        self.channel_message_edits += 1
        self._channel_message_added.set()
        self._channel_message_added = asyncio.Event()
        return _json(200, message)

    async def channel_message_where(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first message the bot posted to a channel that (now, or after an edit) matches."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((m for m in self.channel_messages if predicate(m)), None)
                if found is not None:
                    return found
                await self._channel_message_added.wait()

    # -- interactions ----------------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        status, body = self._interactions.callback(
            int(request.match_info["interaction_id"]),
            request.match_info["token"],
            await _body(request),
        )
        return _json(status, body)

    async def _followup(self, request: web.Request) -> web.Response:
        status, body = self._interactions.followup(
            request.match_info["token"], await _body(request)
        )
        return _json(status, body)

    async def _get_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(*self._interactions.get(info["token"], info["message"]))

    async def _edit_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(*self._interactions.edit(info["token"], info["message"], await _body(request)))

    async def _delete_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(*self._interactions.delete(info["token"], info["message"]))
