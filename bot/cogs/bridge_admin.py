"""`/bridge link|unlink|list|invite`: admins map voice channels to rooms and invite browser
participants into them (Manage Channels)."""

from __future__ import annotations

import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from ..bridges import BridgeManager
from ..store import MappingStore
from ..web import INVITE_TTLS, InviteLinks, Role
from .replies import ROOM_NAME, ROOM_RULES, explain_check_failure, reply

__all__ = ["BridgeAdmin"]

logger = logging.getLogger(__name__)


@app_commands.guild_only()
@app_commands.default_permissions(manage_channels=True)
class BridgeAdmin(commands.GroupCog, group_name="bridge", group_description="Link voice channels to rooms"):
    def __init__(
        self, store: MappingStore, bridges: BridgeManager, invites: InviteLinks | None = None
    ) -> None:
        self.store = store
        self.bridges = bridges
        self.invites = invites
        super().__init__()

    # default_permissions above is only a hint to Discord (and ignored on subcommands):
    # has_permissions is the rule.
    @app_commands.command(name="link", description="Bridge a voice channel into a room")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        channel="The voice channel to bridge",
        room="Room name (lowercase letters, digits, - and _)",
        mode="manual: bridge on /join; auto: join when someone arrives, leave when empty",
    )
    async def link(
        self,
        interaction: discord.Interaction,
        channel: discord.VoiceChannel,
        room: str,
        mode: Literal["manual", "auto"] = "manual",
    ) -> None:
        room = room.strip()
        if not ROOM_NAME.match(room):
            await reply(interaction, f"`{room}` is not a valid room name: use {ROOM_RULES}.")
            return
        assert interaction.guild_id is not None
        mapping = await self.store.link(
            interaction.guild_id, channel.id, room, mode, str(interaction.user.id)
        )
        logger.info(
            "linked guild=%s channel=%s room=%s mode=%s by=%s",
            mapping.guild_id, mapping.channel_id, room, mode, interaction.user.id,
        )
        how = "I join when someone arrives and leave when it empties" if mode == "auto" else "use `/join` in it to start"
        await reply(interaction, f"Linked {channel.mention} to room **{room}** ({mode}: {how}).", ephemeral=False)

    @app_commands.command(name="unlink", description="Stop bridging a voice channel")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(channel="The voice channel to unlink")
    async def unlink(self, interaction: discord.Interaction, channel: discord.VoiceChannel) -> None:
        assert interaction.guild_id is not None
        if not await self.store.unlink(interaction.guild_id, channel.id):
            await reply(interaction, f"{channel.mention} was not linked to any room.")
            return
        active = self.bridges.active(interaction.guild_id)
        if active is not None and active.channel_id == channel.id:
            await self.bridges.stop(interaction.guild_id, "unlinked")
        await reply(interaction, f"Unlinked {channel.mention}.", ephemeral=False)

    @app_commands.command(name="list", description="Show which voice channels are linked to rooms")
    @app_commands.checks.has_permissions(manage_channels=True)
    async def list(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        mappings = await self.store.list(interaction.guild_id)
        if not mappings:
            await reply(interaction, "No voice channel here is linked to a room yet. Use `/bridge link`.")
            return
        lines = [
            f"<#{m.channel_id}> → **{m.room}** ({m.mode})"
            + (" · from config" if m.created_by == "config" else "")
            for m in sorted(mappings, key=lambda m: m.room)
        ]
        await reply(interaction, "\n".join(lines))

    @app_commands.command(name="invite", description="Make a link for joining a room from a web browser")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        room="A room linked to a voice channel of this server",
        role="speaker: talk and listen; listener: listen only",
        expires="How long the link works",
    )
    async def invite(
        self,
        interaction: discord.Interaction,
        room: str,
        role: Literal["speaker", "listener"] = "speaker",
        expires: Literal["1h", "8h", "24h", "7d"] = "24h",
    ) -> None:
        assert interaction.guild_id is not None
        room = room.strip()
        if self.invites is None:
            await reply(interaction, "Web invites are not available on this service.")
            return
        if not ROOM_NAME.match(room):
            await reply(interaction, f"`{room}` is not a valid room name: use {ROOM_RULES}.")
            return
        # Only rooms this server takes part in: a room name alone would let any server's
        # admins invite people into other servers' rooms.
        if room not in {m.room for m in await self.store.list(interaction.guild_id)}:
            await reply(
                interaction,
                f"No voice channel of this server is linked to room **{room}**. "
                "Link one first with `/bridge link`.",
            )
            return
        link = self.invites.create(
            room, Role(role), INVITE_TTLS[expires],
            guild_id=interaction.guild_id, created_by=interaction.user.id,
        )
        logger.info(
            "invite created guild=%s room=%s role=%s expires=%s jti=%s by=%s",
            interaction.guild_id, room, role, expires, link.invite.jti, interaction.user.id,
        )
        what = "talk and listen" if role == "speaker" else "listen"
        await reply(
            interaction,
            f"Invite to room **{room}** ({role}: anyone with the link can {what}), "
            f"valid until <t:{link.invite.expires_at}:f> (<t:{link.invite.expires_at}:R>). "
            f"Share it only with the people it is for:\n{link.url}",
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = explain_check_failure(error)
        if text is None:
            logger.exception("bridge command failed", exc_info=error)
            text = "Something went wrong on my side; the error is logged. Please try again."
        await reply(interaction, text)
