"""`/bridge ...`: admins (Manage Channels) map voice channels to rooms, share their rooms with
other servers, and invite browser participants into them.

A room belongs to the server that created it (the first to link a channel into it). Another
server links into it only with the owner's consent: a one-time share code from the owner's
`/bridge share`, given to `/bridge link ... share_code:`. The owner lists and removes sharing
servers with `/bridge shares`; removal unlinks their channels and stops their bridge at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from ..bridges import BridgeManager
from ..store import DEFAULT_INVITE_CAP, MAX_INVITE_CAP, InviteRecord, MappingStore, ShareCodeRefused
from ..web import INVITE_TTLS, InviteLinks, ParticipantRegistry
from .replies import ROOM_NAME, ROOM_RULES, explain_check_failure, reply
from .room_names import room_choices

__all__ = ["BridgeAdmin"]

logger = logging.getLogger(__name__)

INVITE_ID_SHOWN = 8
"""Invites are listed and revoked by this many leading characters of their id."""
MAX_BUTTON_URL = 512
"""Discord refuses link buttons with longer URLs; the embed still carries the link."""


@app_commands.guild_only()
@app_commands.default_permissions(manage_channels=True)
class BridgeAdmin(
    commands.GroupCog, group_name="bridge", group_description="Link voice channels to rooms"
):
    def __init__(
        self,
        store: MappingStore,
        bridges: BridgeManager,
        links: InviteLinks | None = None,
        participants: ParticipantRegistry | None = None,
    ) -> None:
        self.store = store
        self.bridges = bridges
        self.links = links
        self.participants = participants
        super().__init__()

    async def _rooms(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return await room_choices(self.store, interaction, typed)

    # default_permissions above is only a hint to Discord (and ignored on subcommands):
    # has_permissions is the rule.
    @app_commands.command(name="link", description="Bridge a voice channel into a room")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        channel="The voice channel to bridge",
        room="Room name (lowercase letters, digits, - and _)",
        mode="manual: bridge on /join; auto: join when someone arrives, leave when empty",
        share_code="For another server's room: the code its admins made with /bridge share",
    )
    async def link(
        self,
        interaction: discord.Interaction,
        channel: discord.VoiceChannel,
        room: str,
        mode: Literal["manual", "auto"] = "manual",
        share_code: str | None = None,
    ) -> None:
        room = room.strip()
        if not ROOM_NAME.match(room):
            await reply(interaction, f"`{room}` is not a valid room name: use {ROOM_RULES}.")
            return
        guild_id = interaction.guild_id
        assert guild_id is not None
        by = str(interaction.user.id)
        existing = await self.store.get_room(room)
        if existing is not None and not await self.store.may_use_room(room, guild_id):
            if share_code is None:
                await reply(
                    interaction,
                    f"Room **{room}** belongs to another server. To join it, ask one of its "
                    "admins for a share code (`/bridge share`) and pass it as `share_code`; "
                    "or pick another name for a room of your own.",
                )
                return
            try:
                share = await self.store.redeem_share_code(share_code, guild_id, by)
            except ShareCodeRefused as exc:
                await reply(interaction, f"That share code was not accepted: {exc}.")
                return
            if share.room != room:
                await reply(
                    interaction,
                    f"That share code is for room **{share.room}**, not **{room}**: this server "
                    f"may now link channels into **{share.room}**.",
                )
                return
        mapping = await self.store.link(guild_id, channel.id, room, mode, by)
        if not await self.store.may_use_room(room, guild_id):
            # Another server created the room between our check and our link.
            await self.store.unlink(guild_id, channel.id)
            await reply(interaction, f"Room **{room}** was just taken by another server.")
            return
        logger.info(
            "linked guild=%s channel=%s room=%s mode=%s by=%s",
            mapping.guild_id,
            mapping.channel_id,
            room,
            mode,
            interaction.user.id,
        )
        how = (
            "I join when someone arrives and leave when it empties"
            if mode == "auto"
            else "use `/join` in it to start"
        )
        await reply(
            interaction,
            f"Linked {channel.mention} to room **{room}** ({mode}: {how}).",
            ephemeral=False,
        )

    link.autocomplete("room")(_rooms)

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
            await reply(
                interaction, "No voice channel here is linked to a room yet. Use `/bridge link`."
            )
            return
        owned = {
            r.name
            for r in await self.store.rooms_for_guild(interaction.guild_id)
            if r.owner_guild_id == interaction.guild_id
        }
        lines = [
            f"<#{m.channel_id}> → **{m.room}** ({m.mode})"
            + (" · from config" if m.created_by == "config" else "")
            + ("" if m.room in owned else " · shared by another server")
            for m in sorted(mappings, key=lambda m: m.room)
        ]
        await reply(interaction, "\n".join(lines))

    # -- sharing -------------------------------------------------------------------------------

    @app_commands.command(
        name="share", description="Make a one-time code that lets another server into a room"
    )
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(room="A room this server owns")
    async def share(self, interaction: discord.Interaction, room: str) -> None:
        assert interaction.guild_id is not None
        if not await self._owns(interaction, room.strip()):
            return
        code = await self.store.create_share_code(room.strip(), str(interaction.user.id))
        logger.info(
            "share code made room=%s guild=%s by=%s",
            code.room,
            interaction.guild_id,
            interaction.user.id,
        )
        expires = int(code.expires_at.timestamp())
        await reply(
            interaction,
            f"Share code for room **{code.room}**: `{code.code}`\nGive it to an admin of the other "
            "server; they link a channel with `/bridge link ... share_code:<code>`. It works once, "
            f"until <t:{expires}:f>. Remove a server later with `/bridge shares`.",
        )

    share.autocomplete("room")(_rooms)

    @app_commands.command(name="shares", description="Which servers share a room; remove one")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        room="A room this server owns", remove="Id of a server to take out of the room"
    )
    async def shares(
        self, interaction: discord.Interaction, room: str, remove: str | None = None
    ) -> None:
        room = room.strip()
        if not await self._owns(interaction, room):
            return
        if remove is None:
            shares = await self.store.shares(room)
            if not shares:
                await reply(interaction, f"Room **{room}** is not shared with any other server.")
                return
            lines = [f"Room **{room}** is shared with:"] + [
                f"• {self._guild_name(interaction, s.guild_id)} (`{s.guild_id}`), "
                f"since <t:{int(s.granted_at.timestamp())}:d>"
                for s in shares
            ]
            await reply(interaction, "\n".join(lines))
            return
        if not remove.strip().isdigit():
            await reply(interaction, "`remove` takes a server id, as `/bridge shares` lists them.")
            return
        guild_id = int(remove.strip())
        removal = await self.store.remove_share(room, guild_id)
        if removal is None:
            await reply(interaction, f"Room **{room}** is not shared with server `{guild_id}`.")
            return
        active = self.bridges.active(guild_id)
        if active is not None and active.room == room:
            await self.bridges.stop(guild_id, f"room share removed by guild={interaction.guild_id}")
        revoked = await self._revoke_where(
            room, lambda i: i.guild_id == guild_id, f"share removed by {interaction.user.id}"
        )
        logger.info(
            "share removed room=%s guild=%s unlinked=%d invites_revoked=%d by=%s",
            room,
            guild_id,
            len(removal.unlinked),
            revoked,
            interaction.user.id,
        )
        await reply(
            interaction,
            f"Removed {self._guild_name(interaction, guild_id)} from room **{room}**: "
            f"{len(removal.unlinked)} "
            f"channel(s) unlinked, {revoked} invite(s) revoked.",
        )

    shares.autocomplete("room")(_rooms)

    async def _owns(self, interaction: discord.Interaction, room: str) -> bool:
        """Whether the asking server owns `room`; says why not when it does not."""
        found = await self.store.get_room(room)
        if found is None:
            await reply(interaction, f"There is no room **{room}** yet. `/bridge link` creates it.")
            return False
        if found.owner_guild_id != interaction.guild_id:
            await reply(
                interaction,
                f"Room **{room}** belongs to another server; only its admins can share it.",
            )
            return False
        return True

    @staticmethod
    def _guild_name(interaction: discord.Interaction, guild_id: int) -> str:
        guild = interaction.client.get_guild(guild_id)
        return f"**{guild.name}**" if guild is not None else f"server `{guild_id}`"

    # -- web invites ---------------------------------------------------------------------------

    @app_commands.command(
        name="invite", description="Make a link for joining a room from a web browser"
    )
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        room="A room this server owns or shares",
        role="speaker: talk and listen; listener: listen only",
        expires="How long the link works",
        people="How many people may be in the room with this link at once",
    )
    async def invite(
        self,
        interaction: discord.Interaction,
        room: str,
        role: Literal["speaker", "listener"] = "speaker",
        expires: Literal["1h", "8h", "24h", "7d"] = "24h",
        people: app_commands.Range[int, 1, MAX_INVITE_CAP] = DEFAULT_INVITE_CAP,
    ) -> None:
        guild_id = interaction.guild_id
        assert guild_id is not None
        room = room.strip()
        if self.links is None:
            await reply(interaction, "Web invites are not available on this service.")
            return
        if not ROOM_NAME.match(room):
            await reply(interaction, f"`{room}` is not a valid room name: use {ROOM_RULES}.")
            return
        # A room name alone would let any server's admins invite people into others' rooms.
        if await self.store.get_room(room) is None:
            await reply(
                interaction,
                f"There is no room **{room}** yet: link a voice channel to it with `/bridge link` "
                "to create it (it stays this server's room, also after `/bridge unlink`).",
            )
            return
        if not await self.store.may_use_room(room, guild_id):
            await reply(
                interaction,
                f"Room **{room}** belongs to another server. Its admins can share it with this "
                "one (`/bridge share`).",
            )
            return
        record = await self.store.create_invite(
            room,
            guild_id,
            str(interaction.user.id),
            role,
            datetime.now(UTC) + timedelta(seconds=INVITE_TTLS[expires]),
            people,
        )
        link = self.links.for_record(record)
        logger.info(
            "invite created guild=%s room=%s role=%s expires=%s cap=%d id=%s by=%s",
            guild_id,
            room,
            role,
            expires,
            people,
            record.id,
            interaction.user.id,
        )
        what = "talk and listen" if role == "speaker" else "listen"
        embed = discord.Embed(
            title=f"Join room {room}",
            url=link.url,
            description=(
                f"**{role}**: up to {people} people with this link can {what} at once, until "
                f"<t:{link.invite.expires_at}:f> (<t:{link.invite.expires_at}:R>). Share it only "
                f"with the people it is for. Revoke it with `/bridge invites room:{room} "
                f"revoke:{record.id[:INVITE_ID_SHOWN]}`."
            ),
        )
        view = discord.ui.View()
        if len(link.url) <= MAX_BUTTON_URL:
            view.add_item(discord.ui.Button(label="Open the room", url=link.url))
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True)

    invite.autocomplete("room")(_rooms)

    @app_commands.command(name="invites", description="List a room's web invites; revoke one")
    @app_commands.checks.has_permissions(manage_channels=True)
    @app_commands.describe(
        room="A room this server owns or shares", revoke="The id of an invite to revoke"
    )
    async def invites(
        self, interaction: discord.Interaction, room: str, revoke: str | None = None
    ) -> None:
        guild_id = interaction.guild_id
        assert guild_id is not None
        room = room.strip()
        found = await self.store.get_room(room)
        if found is None or not await self.store.may_use_room(room, guild_id):
            await reply(interaction, f"This server has no room **{room}**.")
            return
        owner = found.owner_guild_id == guild_id
        # The owner manages every invite into its room; a sharing server its own.
        mine = [i for i in await self.store.invites(room) if owner or i.guild_id == guild_id]
        if revoke is None:
            if not mine:
                await reply(interaction, f"Room **{room}** has no working web invites.")
                return
            lines = [f"Web invites into **{room}**:"] + [self._describe(i) for i in mine]
            await reply(interaction, "\n".join(lines))
            return
        wanted = revoke.strip().lower()
        matching = [i for i in mine if i.id.startswith(wanted)] if len(wanted) >= 4 else []
        if len(matching) != 1:
            await reply(
                interaction, f"No single invite of **{room}** has an id starting `{wanted}`."
            )
            return
        count = await self._revoke(matching[0], str(interaction.user.id))
        await reply(
            interaction,
            f"Revoked invite `{matching[0].id[:INVITE_ID_SHOWN]}`: it no longer works, and its "
            f"{count} participant(s) were removed.",
        )

    invites.autocomplete("room")(_rooms)

    def _describe(self, record: InviteRecord) -> str:
        present = len(self.participants.by_invite(record.id)) if self.participants else 0
        return (
            f"• `{record.id[:INVITE_ID_SHOWN]}` {record.role}, by <@{record.created_by}>, "
            f"{present}/{record.max_participants} in, "
            f"expires <t:{int(record.expires_at.timestamp())}:R>"
        )

    async def _revoke(self, record: InviteRecord, by: str) -> int:
        await self.store.revoke_invite(record.id, by)
        removed = 0
        if self.participants is not None:
            removed = await self.participants.remove_invite(record.id, "invite revoked")
        logger.info(
            "invite revoked id=%s room=%s removed=%d by=%s", record.id, record.room, removed, by
        )
        return removed

    async def _revoke_where(self, room: str, which: Callable[[InviteRecord], bool], by: str) -> int:
        chosen = [i for i in await self.store.invites(room) if which(i)]
        for record in chosen:
            await self._revoke(record, by)
        return len(chosen)

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = explain_check_failure(error)
        if text is None:
            logger.exception("bridge command failed", exc_info=error)
            text = "Something went wrong on my side; the error is logged. Please try again."
        await reply(interaction, text)
