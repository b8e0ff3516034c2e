"""The fake's world: users, guilds, roles, channels, members and voice states.

Plain typed dataclasses that render themselves as the JSON payloads Discord sends. The gateway,
REST and voice modules read and mutate these; nothing here does I/O.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ALL_PERMISSIONS",
    "ChannelType",
    "FakeChannel",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "FakeVoiceState",
    "FakeWorld",
    "Permission",
    "SnowflakeGenerator",
]

DISCORD_EPOCH_MS = 1_420_070_400_000


class Permission(enum.IntFlag):
    """The permission bits the fake's scenarios need (Discord's numbering)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    READ_MESSAGE_HISTORY = 1 << 16
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    MUTE_MEMBERS = 1 << 22
    MOVE_MEMBERS = 1 << 24
    USE_VAD = 1 << 25
    USE_APPLICATION_COMMANDS = 1 << 31


# Discord's "every permission" mask as of API v10 (what an owner or administrator gets).
ALL_PERMISSIONS = 8_866_461_766_385_663

# What @everyone gets in a fresh guild: enough to see, talk and use slash commands.
EVERYONE_PERMISSIONS = (
    Permission.CREATE_INSTANT_INVITE
    | Permission.VIEW_CHANNEL
    | Permission.SEND_MESSAGES
    | Permission.READ_MESSAGE_HISTORY
    | Permission.CONNECT
    | Permission.SPEAK
    | Permission.USE_VAD
    | Permission.USE_APPLICATION_COMMANDS
)


class SnowflakeGenerator:
    """Monotonic snowflakes with a real timestamp part, so `created_at` makes sense."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> int:
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (millis << 22) | (next(self._counter) & 0xFFF)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


class ChannelType(enum.IntEnum):
    TEXT = 0
    VOICE = 2
    CATEGORY = 4
    STAGE = 13


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def to_me_payload(self) -> dict[str, Any]:
        """The richer object GET /users/@me and READY carry for the bot itself."""
        return {
            **self.to_payload(),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "locale": "en-US",
            "email": None,
        }


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    color: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }


@dataclass
class FakeChannel:
    id: int
    guild_id: int
    name: str
    type: ChannelType
    position: int = 0
    parent_id: int | None = None
    bitrate: int = 64_000
    user_limit: int = 0

    @property
    def is_voice(self) -> bool:
        return self.type in (ChannelType.VOICE, ChannelType.STAGE)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.id),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "type": int(self.type),
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "nsfw": False,
            "flags": 0,
        }
        if self.is_voice:
            payload |= {
                "bitrate": self.bitrate,
                "user_limit": self.user_limit,
                "rtc_region": None,
                "rate_limit_per_user": 0,
                "last_message_id": None,
            }
        else:
            payload |= {"topic": None, "rate_limit_per_user": 0, "last_message_id": None}
        return payload


@dataclass
class FakeMember:
    user: FakeUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=_iso_now)

    @property
    def id(self) -> int:
        return self.user.id

    def to_payload(self) -> dict[str, Any]:
        # discord.py 2.7 reads data['flags'] unconditionally (member.py, Member.__init__).
        return {
            "user": self.user.to_payload(),
            "nick": self.nick,
            "roles": [str(r) for r in self.role_ids],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "avatar": None,
            "communication_disabled_until": None,
        }


@dataclass
class FakeVoiceState:
    user_id: int
    channel_id: int | None
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False

    def to_payload(self, guild_id: int, member: FakeMember | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "guild_id": str(guild_id),
            "channel_id": str(self.channel_id) if self.channel_id else None,
            "user_id": str(self.user_id),
            "session_id": self.session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": self.self_deaf,
            "self_mute": self.self_mute,
            "self_stream": False,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if member is not None:
            payload["member"] = member.to_payload()
        return payload


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    voice_states: dict[int, FakeVoiceState] = field(default_factory=dict)
    ids: SnowflakeGenerator = field(default_factory=SnowflakeGenerator, repr=False)

    def __post_init__(self) -> None:
        # @everyone's role id is the guild id, as on Discord.
        self.roles.setdefault(self.id, FakeRole(self.id, "@everyone", int(EVERYONE_PERMISSIONS)))

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def add_role(self, name: str, permissions: int = 0) -> FakeRole:
        role = FakeRole(self.ids.next(), name, int(permissions), position=len(self.roles))
        self.roles[role.id] = role
        return role

    def _add_channel(self, name: str, type_: ChannelType) -> FakeChannel:
        channel = FakeChannel(self.ids.next(), self.id, name, type_, position=len(self.channels))
        self.channels[channel.id] = channel
        return channel

    def add_text_channel(self, name: str) -> FakeChannel:
        return self._add_channel(name, ChannelType.TEXT)

    def add_voice_channel(self, name: str) -> FakeChannel:
        return self._add_channel(name, ChannelType.VOICE)

    def add_member(self, user: FakeUser, roles: list[FakeRole] | None = None) -> FakeMember:
        member = FakeMember(user, [r.id for r in roles or []])
        self.members[user.id] = member
        return member

    def permissions_for(self, user_id: int) -> int:
        """Guild-level permissions (no channel overwrites: the fake has none)."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        member = self.members[user_id]
        value = self.everyone.permissions
        for role_id in member.role_ids:
            value |= self.roles[role_id].permissions
        if value & Permission.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return value

    def voice_members(self, channel_id: int) -> list[int]:
        return [s.user_id for s in self.voice_states.values() if s.channel_id == channel_id]

    def to_create_payload(self) -> dict[str, Any]:
        """GUILD_CREATE as sent after READY: the whole guild, member_count == len(members),
        so discord.py considers it chunked and does not ask for members."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.to_payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": _iso_now(),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [s.to_payload(self.id) for s in self.voice_states.values()],
            "members": [m.to_payload() for m in self.members.values()],
            "channels": [c.to_payload() for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def to_rest_payload(self) -> dict[str, Any]:
        """GET /guilds/{id}: no members, channels or voice states (as on Discord)."""
        payload = self.to_create_payload()
        for key in (
            "voice_states",
            "members",
            "channels",
            "threads",
            "presences",
            "joined_at",
            "large",
            "member_count",
            "stage_instances",
            "guild_scheduled_events",
            "soundboard_sounds",
        ):
            payload.pop(key)
        payload["approximate_member_count"] = len(self.members)
        payload["approximate_presence_count"] = 0
        return payload


@dataclass
class FakeWorld:
    """Everything the fake knows: the bot, other users, guilds. One snowflake source for all."""

    bot_name: InitVar[str]
    ids: SnowflakeGenerator = field(default_factory=SnowflakeGenerator)
    users: dict[int, FakeUser] = field(default_factory=dict)
    guilds: dict[int, FakeGuild] = field(default_factory=dict)
    bot: FakeUser = field(init=False)

    def __post_init__(self, bot_name: str) -> None:
        # A bot's user id is also its application id.
        self.bot = self.add_user(bot_name, bot=True)

    def add_user(self, username: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(self.ids.next(), username, bot=bot, global_name=username.title())
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: FakeUser | None = None) -> FakeGuild:
        """A guild with the bot as a member (holding a role that lets it connect and speak)."""
        owner = owner or self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        guild = FakeGuild(self.ids.next(), name, owner.id, ids=self.ids)
        guild.add_member(owner)
        bot_role = guild.add_role(self.bot.username, int(EVERYONE_PERMISSIONS))
        guild.add_member(self.bot, [bot_role])
        self.guilds[guild.id] = guild
        return guild

    def channel(self, channel_id: int) -> FakeChannel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return None
