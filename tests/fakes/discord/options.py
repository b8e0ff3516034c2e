"""Slash-command options as a Discord client would send them, checked against the synced schema.

A test passes `{"room": "lobby", "channel": voice_channel}`; this finds each option's type in
the command the bot synced (inside the subcommand / group), turns fake objects into snowflakes
and fills `resolved` the way discord.py's `app_commands.Namespace` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .state import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser

__all__ = ["OptionValue", "build_options"]

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE = 6, 7, 8, 9
SNOWFLAKE_OPTIONS = (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE)

OptionValue = str | int | float | bool | FakeUser | FakeMember | FakeChannel | FakeRole
Payload = dict[str, Any]


def build_options(
    guild: FakeGuild,
    command: Payload,
    options: dict[str, OptionValue],
    *,
    subcommand: str | None,
    group: str | None,
    permissions: int,
    focused: str | None = None,
) -> tuple[list[Payload], dict[str, Payload]]:
    """`data.options` and `data.resolved` for an INTERACTION_CREATE of `command`; with
    `focused`, for an autocomplete of that option (which must have autocomplete on, and
    required options may still be missing: the user is typing).

    Raises ValueError for what Discord's client would not let a user send (unknown or
    missing required options, unknown subcommands)."""
    schema, wrap = _locate(command, subcommand, group)
    by_name = {o["name"]: o for o in schema}
    if focused is not None and not by_name.get(focused, {}).get("autocomplete"):
        raise ValueError(f"option {focused!r} has no autocomplete: Discord would not ask")
    missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
    if missing and focused is None:
        raise ValueError(f"required options missing: {missing} (Discord's client enforces them)")
    values: list[Payload] = []
    resolved: dict[str, Payload] = {}
    for name, value in options.items():
        if name not in by_name:
            raise ValueError(f"no option {name!r}; the synced command has {sorted(by_name)}")
        type_ = by_name[name]["type"]
        wire = _wire_value(guild, type_, value, resolved, permissions)
        values.append({"name": name, "type": type_, "value": wire})
        if name == focused:
            values[-1]["focused"] = True
    return wrap(values), resolved


def _wire_value(
    guild: FakeGuild, type_: int, value: OptionValue, resolved: dict[str, Payload], permissions: int
) -> Any:
    if isinstance(value, FakeMember):
        value = value.user
    if isinstance(value, FakeUser):
        resolved.setdefault("users", {})[str(value.id)] = value.to_payload()
        if value.id in guild.members:
            member = guild.members[value.id].to_payload()
            member.pop("user")  # resolved members come without it; discord.py joins users in
            member["permissions"] = str(guild.permissions_for(value.id))
            resolved.setdefault("members", {})[str(value.id)] = member
        return str(value.id)
    if isinstance(value, FakeChannel):
        # A resolved channel carries the invoking member's permissions in it.
        channel = value.to_payload() | {"permissions": str(permissions)}
        resolved.setdefault("channels", {})[str(value.id)] = channel
        return str(value.id)
    if isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = value.to_payload()
        return str(value.id)
    if type_ in SNOWFLAKE_OPTIONS:
        raise TypeError(f"option type {type_} needs a FakeUser/FakeChannel/FakeRole, got {value!r}")
    return value


def _locate(
    command: Payload, subcommand: str | None, group: str | None
) -> tuple[list[Payload], Callable[[list[Payload]], list[Payload]]]:
    """The option schema the values belong to, and how to nest values into `data.options`."""

    def find(schema: list[Payload], name: str, type_: int) -> Payload:
        for option in schema:
            if option["name"] == name and option["type"] == type_:
                return option
        kind = "group" if type_ == SUB_COMMAND_GROUP else "subcommand"
        raise ValueError(f"/{command['name']} has no {kind} {name!r}")

    schema = command.get("options") or []
    if group is not None:
        if subcommand is None:
            raise ValueError("a subcommand group needs a subcommand")
        parent = find(schema, group, SUB_COMMAND_GROUP)
        sub = find(parent.get("options") or [], subcommand, SUB_COMMAND)
        return sub.get("options") or [], lambda values: [
            {
                "name": group,
                "type": SUB_COMMAND_GROUP,
                "options": [{"name": subcommand, "type": SUB_COMMAND, "options": values}],
            }
        ]
    if subcommand is not None:
        sub = find(schema, subcommand, SUB_COMMAND)
        return sub.get("options") or [], lambda values: [
            {"name": subcommand, "type": SUB_COMMAND, "options": values}
        ]
    return schema, lambda values: values
