"""`ConsentNotices`: while a voice channel is bridged, one message in its text chat says who
can hear it — the room, the other servers' channels in it, how many web listeners — and is
kept up to date (edited, at most every `EDIT_INTERVAL_S`). People must know when they are
heard outside their server. When the bridge goes down the message says so.

One task per bridged channel follows the room's directory events; a burst of changes makes
one edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import discord

from media.rooms import Member, MemberKind, RoomDirectory, SpeakingChanged

from .bridges import ActiveBridge, BridgeManager, member_id

__all__ = ["EDIT_INTERVAL_S", "ConsentNotices", "Hearers", "notice_text"]

logger = logging.getLogger(__name__)

EDIT_INTERVAL_S = 2.0
"""At most one edit of a notice per this long (Discord rate-limits message edits)."""
MAX_CHANNELS_NAMED = 10


@dataclass(frozen=True, slots=True)
class Hearers:
    """Who, besides the channel itself, hears a bridged channel."""

    room: str
    channels: tuple[str, ...]
    """Display names of the other Discord channels bridged into the room."""
    web_listeners: int


def hearers(room: str, members: list[Member], own_member_id: str) -> Hearers:
    channels = tuple(
        sorted(
            m.display_name
            for m in members
            if m.kind is MemberKind.DISCORD and m.member_id != own_member_id
        )
    )
    web = sum(1 for m in members if m.kind is MemberKind.WEB)
    return Hearers(room, channels, web)


def notice_text(who: Hearers) -> str:
    named = ", ".join(discord.utils.escape_markdown(c) for c in who.channels[:MAX_CHANNELS_NAMED])
    if len(who.channels) > MAX_CHANNELS_NAMED:
        named += f" and {len(who.channels) - MAX_CHANNELS_NAMED} more"
    listeners = "1 web listener" if who.web_listeners == 1 else f"{who.web_listeners} web listeners"
    return (
        f"🔴 **This voice channel is bridged** into room **{who.room}**: what is said here is "
        f"heard outside this server.\n"
        f"Who can hear it: {named or 'no other Discord channel'}; {listeners}.\n"
        "Anyone in the channel can stop it with `/leave`."
    )


ENDED_TEXT = "⚪ This voice channel is no longer bridged: nobody outside this server hears it."


class ConsentNotices:
    def __init__(self, bridges: BridgeManager, directory: RoomDirectory) -> None:
        self._directory = directory
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._ending: set[asyncio.Task[None]] = set()
        """Cancelled followers still saying that the bridge ended."""
        bridges.watch(self._on_bridge)

    def _on_bridge(self, active: ActiveBridge, up: bool) -> None:
        previous = self._tasks.pop(active.guild_id, None)
        if previous is not None:
            previous.cancel()
            self._ending.add(previous)
            previous.add_done_callback(self._ending.discard)
        channel = active.voice.channel
        if up and isinstance(channel, discord.VoiceChannel):
            self._tasks[active.guild_id] = asyncio.create_task(
                self._follow(active, channel), name=f"consent-notice-{active.guild_id}"
            )

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._ending]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, active: ActiveBridge, channel: discord.VoiceChannel) -> None:
        own = member_id(active.guild_id, active.channel_id)
        changed = asyncio.Event()
        message: discord.Message | None = None
        reader = asyncio.create_task(self._watch_room(active.room, changed))
        try:
            shown = ""
            while True:
                members = await self._directory.members(active.room)
                text = notice_text(hearers(active.room, members, own))
                if text != shown:
                    message = await self._show(channel, message, text)
                    shown = text
                await asyncio.sleep(EDIT_INTERVAL_S)
                await changed.wait()
                changed.clear()
        except asyncio.CancelledError:
            if message is not None:
                with contextlib.suppress(discord.HTTPException):
                    await message.edit(content=ENDED_TEXT)
            raise
        except discord.HTTPException as exc:
            logger.warning(
                "consent notice failed guild=%s channel=%s status=%s",
                active.guild_id,
                channel.id,
                exc.status,
            )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _show(
        self, channel: discord.VoiceChannel, message: discord.Message | None, text: str
    ) -> discord.Message:
        none = discord.AllowedMentions.none()
        if message is None:
            posted = await channel.send(text, allowed_mentions=none)
            logger.info("consent notice posted guild=%s channel=%s", channel.guild.id, channel.id)
            return posted
        return await message.edit(content=text, allowed_mentions=none)

    async def _watch_room(self, room: str, changed: asyncio.Event) -> None:
        """Sets `changed` on every change of the room; re-subscribes when the stream ends."""
        while True:
            async with self._directory.events(room) as stream:
                changed.set()  # events may have been missed before (re)subscribing
                async for event in stream:
                    if not isinstance(event, SpeakingChanged):  # changes no one's hearing
                        changed.set()
