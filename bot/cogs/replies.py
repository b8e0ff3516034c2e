"""Plain-words replies shared by the cogs: every failure says what to do next."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import discord
from discord import app_commands

ROOM_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
ROOM_RULES = "1–64 characters: lowercase letters, digits, `-` and `_`"


def link_hint(channel: discord.abc.GuildChannel | None) -> str:
    where = channel.mention if channel is not None else "#channel"
    return (
        f"An admin (Manage Channels) can link it with `/bridge link channel:{where} room:<name>`."
    )


async def reply(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Respond exactly once; after a deferral or a response, follow up instead."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral)


async def defer_privately(interaction: discord.Interaction) -> None:
    """Defer a slow command so that whatever comes next can stay private.

    Discord gives the first follow-up after a deferral the deferral's visibility, whatever
    flags it carries: a public deferral would show an error reply to the whole channel.
    """
    await interaction.response.defer(thinking=True, ephemeral=True)


async def announce(interaction: discord.Interaction, text: str, **extra: Any) -> None:
    """Say `text` to the whole channel, also after a private deferral (whose "thinking"
    message is deleted first, so the follow-up is a new, public message)."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, **extra)
        return
    with contextlib.suppress(discord.NotFound):
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=False, **extra)


def explain_check_failure(error: app_commands.AppCommandError) -> str | None:
    if isinstance(error, app_commands.MissingPermissions):
        needed = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"You need the **{needed}** permission to do that."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server, not in direct messages."
    if isinstance(error, app_commands.BotMissingPermissions):
        needed = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"I am missing the **{needed}** permission here; ask an admin to grant it."
    return None
