"""`SwitchboardBot`: the discord.py client, composed from the services it is handed."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord
from discord.ext import commands

from media.rooms import RoomDirectory

from .bridges import BridgeManager
from .cogs import BridgeAdmin, Moderation, VoiceSession
from .presence import ConsentNotices
from .store import MappingStore
from .web import InviteLinks, ParticipantRegistry

__all__ = ["SwitchboardBot"]

logger = logging.getLogger(__name__)


class SwitchboardBot(commands.Bot):
    def __init__(
        self,
        *,
        store: MappingStore,
        bridges: BridgeManager,
        directory: RoomDirectory,
        auto_leave_delay_s: float,
        dev_guild_id: int | None,
        sync_globally: bool,
        invites: InviteLinks | None = None,
        participants: ParticipantRegistry | None = None,
        moderator_role_id: int | None = None,
        connector: aiohttp.BaseConnector | None = None,
        **options: Any,
    ) -> None:
        intents = discord.Intents.default()  # guilds and voice states; no privileged intents
        intents.message_content = False
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, connector=connector, **options
        )
        self.store = store
        self.bridges = bridges
        self.directory = directory
        self.notices = ConsentNotices(bridges, directory)
        self._auto_leave_delay_s = auto_leave_delay_s
        self._dev_guild_id = dev_guild_id
        self._sync_globally = sync_globally
        self.invites = invites
        self.participants = participants
        self._moderator_role_id = moderator_role_id

    async def setup_hook(self) -> None:
        await self.add_cog(BridgeAdmin(self.store, self.bridges, self.invites, self.participants))
        if self.participants is not None:
            await self.add_cog(Moderation(self.store, self.participants, self._moderator_role_id))
        await self.add_cog(
            VoiceSession(self, self.store, self.bridges, self.directory, self._auto_leave_delay_s)
        )
        if self._dev_guild_id is not None:
            guild = discord.Object(id=self._dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            logger.info("commands synced guild=%s count=%d", self._dev_guild_id, len(synced))
        elif self._sync_globally:
            synced = await self.tree.sync()
            logger.info("commands synced globally count=%d", len(synced))

    async def close(self) -> None:
        # Bridges are stopped first (Service): their notices say so before the client goes.
        await self.notices.stop()
        await super().close()

    async def on_ready(self) -> None:
        assert self.user is not None
        logger.info("discord ready user=%s guilds=%d", self.user.id, len(self.guilds))
