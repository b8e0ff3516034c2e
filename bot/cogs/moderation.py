"""`/web list|kick|mute|unmute|ban`: moderating the browser participants of this server's
rooms (owned or shared), for admins (Manage Channels) or members with the configured
moderator role. Mute is enforced by the service: the participant's microphone stops being
forwarded and it may not publish again until unmuted; every page in the room shows it."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from ..store import MappingStore
from ..web import Participant, ParticipantRegistry
from .replies import explain_check_failure, reply

__all__ = ["Moderation"]

logger = logging.getLogger(__name__)

MAX_CHOICES = 25
NOT_A_MODERATOR = "You need the **Manage Channels** permission or the moderator role for that."


class NotAModerator(app_commands.CheckFailure):
    pass


@app_commands.guild_only()
class Moderation(
    commands.GroupCog, group_name="web", group_description="Moderate web participants"
):
    def __init__(
        self, store: MappingStore, participants: ParticipantRegistry, moderator_role_id: int | None
    ) -> None:
        self.store = store
        self.participants = participants
        self.moderator_role_id = moderator_role_id
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.permissions.manage_channels:
            return True
        roles = getattr(interaction.user, "roles", [])
        if self.moderator_role_id is not None and any(
            r.id == self.moderator_role_id for r in roles
        ):
            return True
        raise NotAModerator(NOT_A_MODERATOR)

    async def _ours(self, interaction: discord.Interaction) -> list[Participant]:
        """The web participants of the rooms this server owns or shares."""
        assert interaction.guild_id is not None
        rooms = {room.name for room in await self.store.rooms_for_guild(interaction.guild_id)}
        return [p for room in sorted(rooms) for p in self.participants.in_room(room)]

    async def _find(
        self, interaction: discord.Interaction, participant_id: str
    ) -> Participant | None:
        found = next(
            (p for p in await self._ours(interaction) if p.participant_id == participant_id), None
        )
        if found is None:
            await reply(
                interaction, "No such web participant in this server's rooms (it may have left)."
            )
        return found

    async def _choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        typed = typed.casefold()
        return [
            app_commands.Choice(
                name=f"{p.display_name} ({p.room}, {p.role.value})"[:100], value=p.participant_id
            )
            for p in await self._ours(interaction)
            if typed in p.display_name.casefold() or p.participant_id.startswith(typed)
        ][:MAX_CHOICES]

    @app_commands.command(name="list", description="Web participants in this server's rooms")
    async def list(self, interaction: discord.Interaction) -> None:
        ours = await self._ours(interaction)
        if not ours:
            await reply(interaction, "Nobody is in this server's rooms from the web.")
            return
        lines = [
            f"• **{discord.utils.escape_markdown(p.display_name)}** in **{p.room}** "
            f"({p.role.value}"
            + (", muted" if p.muted else "")
            + f") `{p.participant_id}` invite `{p.invite_id[:8]}`"
            for p in ours
        ]
        await reply(interaction, "\n".join(lines))

    @app_commands.command(name="kick", description="Remove a web participant from the room")
    @app_commands.describe(participant="Who to remove")
    async def kick(self, interaction: discord.Interaction, participant: str) -> None:
        found = await self._find(interaction, participant)
        if found is None:
            return
        await self.participants.kick(found.participant_id, str(interaction.user.id))
        logger.info(
            "web participant kicked participant=%s room=%s by=%s",
            found.participant_id,
            found.room,
            interaction.user.id,
        )
        await reply(
            interaction,
            f"Removed **{discord.utils.escape_markdown(found.display_name)}** "
            f"from **{found.room}**. "
            "Their invite still works: `/web ban` keeps them out.",
        )

    @app_commands.command(name="mute", description="Stop forwarding a web participant's microphone")
    @app_commands.describe(participant="Who to mute")
    async def mute(self, interaction: discord.Interaction, participant: str) -> None:
        await self._set_muted(interaction, participant, True)

    @app_commands.command(name="unmute", description="Let a muted web participant talk again")
    @app_commands.describe(participant="Who to unmute")
    async def unmute(self, interaction: discord.Interaction, participant: str) -> None:
        await self._set_muted(interaction, participant, False)

    async def _set_muted(
        self, interaction: discord.Interaction, participant_id: str, muted: bool
    ) -> None:
        found = await self._find(interaction, participant_id)
        if found is None:
            return
        await self.participants.set_muted(found, muted, str(interaction.user.id))
        name = discord.utils.escape_markdown(found.display_name)
        await reply(
            interaction, f"{'Muted' if muted else 'Unmuted'} **{name}** in **{found.room}**."
        )

    @app_commands.command(
        name="ban", description="Keep a name, or everyone with an invite, out of a room"
    )
    @app_commands.describe(
        participant="Ban this participant's name from its room (and remove them)",
        invite="Or: the id of an invite to revoke (see /bridge invites)",
    )
    async def ban(
        self,
        interaction: discord.Interaction,
        participant: str | None = None,
        invite: str | None = None,
    ) -> None:
        if (participant is None) == (invite is None):
            await reply(interaction, "Give either `participant` or `invite`.")
            return
        by = str(interaction.user.id)
        if participant is not None:
            found = await self._find(interaction, participant)
            if found is None:
                return
            removed = await self.participants.ban_name(found.room, found.display_name, by)
            name = discord.utils.escape_markdown(found.display_name)
            await reply(
                interaction,
                f"Banned the name **{name}** from **{found.room}** ({removed} removed).",
            )
            return
        assert invite is not None and interaction.guild_id is not None
        wanted = invite.strip().lower()
        rooms = {room.name for room in await self.store.rooms_for_guild(interaction.guild_id)}
        matching = [
            record
            for room in sorted(rooms)
            for record in await self.store.invites(room)
            if len(wanted) >= 4 and record.id.startswith(wanted)
        ]
        if len(matching) != 1:
            await reply(
                interaction,
                f"No single working invite of this server's rooms has an id starting `{wanted}`.",
            )
            return
        await self.store.revoke_invite(matching[0].id, by)
        removed = await self.participants.remove_invite(matching[0].id, "invite banned")
        await reply(
            interaction, f"Revoked invite `{matching[0].id[:8]}`; {removed} participant(s) removed."
        )

    kick.autocomplete("participant")(_choices)
    mute.autocomplete("participant")(_choices)
    unmute.autocomplete("participant")(_choices)
    ban.autocomplete("participant")(_choices)

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, NotAModerator):
            text: str | None = NOT_A_MODERATOR
        else:
            text = explain_check_failure(error)
        if text is None:
            logger.exception("moderation command failed", exc_info=error)
            text = "Something went wrong on my side; the error is logged. Please try again."
        await reply(interaction, text)
