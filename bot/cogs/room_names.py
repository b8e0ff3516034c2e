"""Autocomplete of room names: only the rooms the asking server owns or was let into."""

from __future__ import annotations

import discord
from discord import app_commands

from ..store import MappingStore

__all__ = ["MAX_CHOICES", "room_choices"]

MAX_CHOICES = 25
"""Discord shows at most 25 choices."""


async def room_choices(
    store: MappingStore, interaction: discord.Interaction, typed: str
) -> list[app_commands.Choice[str]]:
    if interaction.guild_id is None:
        return []
    typed = typed.strip().lower()
    rooms = await store.rooms_for_guild(interaction.guild_id)
    names = [room.name for room in rooms if typed in room.name]
    names.sort(key=lambda name: (not name.startswith(typed), name))
    return [app_commands.Choice(name=name, value=name) for name in names[:MAX_CHOICES]]
