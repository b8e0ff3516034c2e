"""`/join`, `/leave`, `/status`, and auto mode following voice-state events."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from media.rooms import MemberKind, RoomDirectory

from ..bridges import AlreadyBridged, BridgeManager
from ..store import MappingStore
from .replies import announce, defer_privately, explain_check_failure, link_hint, reply

__all__ = ["VoiceSession"]

logger = logging.getLogger(__name__)


def _already_bridging(channel_id: int) -> str:
    return (
        f"I am already bridging <#{channel_id}> in this server (Discord allows one voice channel "
        "per bot). Run `/leave` there first."
    )


def _may_stop(interaction: discord.Interaction, channel_id: int) -> bool:
    """Members in the bridged channel, and admins, may stop a bridge; nobody else."""
    if interaction.permissions.manage_channels:
        return True
    voice = getattr(interaction.user, "voice", None)
    return voice is not None and voice.channel is not None and voice.channel.id == channel_id


def _humans(channel: discord.VoiceChannel) -> list[discord.Member]:
    return [m for m in channel.members if not m.bot]


@app_commands.guild_only()
class VoiceSession(commands.Cog):
    def __init__(
        self,
        bot: commands.Bot,
        store: MappingStore,
        bridges: BridgeManager,
        directory: RoomDirectory,
        auto_leave_delay_s: float,
    ) -> None:
        self.bot = bot
        self.store = store
        self.bridges = bridges
        self.directory = directory
        self.auto_leave_delay_s = auto_leave_delay_s
        self._leaving: dict[int, asyncio.Task[None]] = {}

    async def cog_unload(self) -> None:
        for task in self._leaving.values():
            task.cancel()
        await asyncio.gather(*self._leaving.values(), return_exceptions=True)

    # -- /join /leave /status ------------------------------------------------------------------

    @app_commands.command(name="join", description="Bridge your voice channel into its room")
    async def join(self, interaction: discord.Interaction) -> None:
        member = interaction.user
        voice = getattr(member, "voice", None)
        channel = voice.channel if voice is not None else None
        if not isinstance(channel, discord.VoiceChannel):
            await reply(interaction, "Join a voice channel first, then run `/join` again.")
            return
        mapping = await self.store.get(channel.guild.id, channel.id)
        if mapping is None:
            await reply(
                interaction, f"{channel.mention} is not linked to a room. {link_hint(channel)}"
            )
            return
        active = self.bridges.active(channel.guild.id)
        if active is not None and active.channel_id == channel.id:
            await reply(
                interaction, f"{channel.mention} is already bridged into **{active.room}**."
            )
            return
        if active is not None:
            await reply(interaction, _already_bridging(active.channel_id))
            return
        await defer_privately(interaction)
        try:
            active = await self.bridges.start(channel, mapping.room, mapping.mode)
        except AlreadyBridged as exc:  # another /join won the race
            await reply(interaction, _already_bridging(exc.active.channel_id))
            return
        except (discord.ClientException, TimeoutError) as exc:
            logger.warning(
                "join failed guild=%s channel=%s error=%s", channel.guild.id, channel.id, exc
            )
            await reply(
                interaction,
                f"I could not connect to {channel.mention}: check that I have the Connect and "
                "Speak permissions there, then try again.",
            )
            return
        await announce(interaction, f"Bridged {channel.mention} into room **{active.room}**.")

    @app_commands.command(name="leave", description="Stop bridging this server's voice channel")
    async def leave(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        active = self.bridges.active(interaction.guild_id)
        if active is None:
            await reply(interaction, "Nothing is bridged in this server right now.")
            return
        if not _may_stop(interaction, active.channel_id):
            await reply(
                interaction,
                f"Only people in <#{active.channel_id}> or admins (Manage Channels) can stop "
                "this bridge.",
            )
            return
        await defer_privately(interaction)
        active = await self.bridges.stop(
            interaction.guild_id, f"leave command by={interaction.user.id}"
        )
        if active is None:
            await reply(interaction, "Nothing is bridged in this server right now.")
            return
        await announce(
            interaction, f"Left <#{active.channel_id}>; room **{active.room}** goes on without it."
        )

    @app_commands.command(
        name="status", description="Who is in this server's room, and how the link is"
    )
    async def status(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        active = self.bridges.active(interaction.guild_id)
        if active is None:
            await reply(
                interaction,
                "Nothing is bridged in this server. Use `/join` in a linked voice channel.",
            )
            return
        members = await self.directory.members(active.room)
        lines = [f"Room **{active.room}** — bridged from <#{active.channel_id}>"]
        for member in sorted(members, key=lambda m: (m.kind.value, m.display_name)):
            kind = {MemberKind.DISCORD: "Discord", MemberKind.WEB: "web"}.get(member.kind, "other")
            speakers = []
            for track in member.tracks:
                mark = "🔊 " if track.track_name in member.speaking else ""
                speakers.append(f"{mark}{track.display_name or track.track_name}")
            who = ", ".join(speakers) if speakers else "nobody speaking"
            lines.append(f"• {member.display_name} ({kind}): {who}")
        stats = await active.bridge.peer.stats()
        received = [t for t in stats.tracks if t.direction == "recv"]
        lost = sum(t.lost for t in received)
        packets = sum(t.packets for t in received) + lost
        jitters = [t.jitter_ms for t in received if t.jitter_ms is not None]
        rtts = [t.rtt_ms for t in stats.tracks if t.rtt_ms is not None]
        quality = f"loss {100 * lost / packets:.1f}%" if packets else "no audio received yet"
        if jitters:
            quality += f", jitter {max(jitters):.0f} ms"
        if rtts:
            quality += f", round trip {max(rtts):.0f} ms"
        if stats.recoveries:
            quality += f", reconnected {stats.recoveries}×"
        lines.append(f"Link: {stats.state.value}, {quality}")
        await reply(interaction, "\n".join(lines))

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = explain_check_failure(error)
        if text is None:
            logger.exception("voice command failed", exc_info=error)
            text = "Something went wrong on my side; the error is logged. Please try again."
        await reply(interaction, text)

    # -- auto mode ------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Bridge auto channels that already have people in them when the bot (re)connects."""
        for guild in self.bot.guilds:
            for mapping in await self.store.list(guild.id):
                channel = guild.get_channel(mapping.channel_id)
                if mapping.mode == "auto" and isinstance(channel, discord.VoiceChannel):
                    try:
                        await self._follow_auto(channel)
                    except Exception:
                        logger.exception(
                            "auto start failed guild=%s channel=%s", guild.id, channel.id
                        )

    @commands.Cog.listener()
    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        if member.bot or before.channel == after.channel:
            return
        for channel in {before.channel, after.channel} - {None}:
            if isinstance(channel, discord.VoiceChannel):
                try:
                    await self._follow_auto(channel)
                except Exception:
                    logger.exception(
                        "auto mode failed guild=%s channel=%s", channel.guild.id, channel.id
                    )

    async def _follow_auto(self, channel: discord.VoiceChannel) -> None:
        mapping = await self.store.get(channel.guild.id, channel.id)
        if mapping is None or mapping.mode != "auto":
            return
        active = self.bridges.active(channel.guild.id)
        humans = _humans(channel)
        if humans:
            pending = self._leaving.pop(channel.guild.id, None)
            if pending is not None:
                pending.cancel()
            if active is None:
                await self.bridges.start(channel, mapping.room, mapping.mode)
        elif (
            active is not None
            and active.channel_id == channel.id
            and channel.guild.id not in self._leaving
        ):
            self._leaving[channel.guild.id] = asyncio.create_task(self._leave_later(channel))

    async def _leave_later(self, channel: discord.VoiceChannel) -> None:
        try:
            await asyncio.sleep(self.auto_leave_delay_s)
            if not _humans(channel):
                await self.bridges.stop(channel.guild.id, "auto: channel empty")
        finally:
            self._leaving.pop(channel.guild.id, None)
