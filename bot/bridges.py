"""`BridgeManager`: which voice channel of each guild is bridged into which room.

Discord lets a bot be in one voice channel per guild, so there is at most one bridge per
guild. Starting one joins the room (a media `Bridge`), connects to the voice channel and binds
the two with a voice link; stopping undoes it in the reverse order. All changes for one guild
go through that guild's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import discord
from discord.ext import voice_recv

from media.bridge import Bridge, BridgeConfig
from media.peer import PeerConfig, PeerEvent
from media.realtime import RealtimeClient
from media.rooms import MemberKind, RoomDirectory

from .metrics import LinkQuality, Metrics, link_quality
from .voice import VoiceCounters

__all__ = ["ActiveBridge", "AlreadyBridged", "BridgeManager", "VoiceLinkLike"]

logger = logging.getLogger(__name__)

VOICE_CONNECT_TIMEOUT_S = 20.0


class VoiceLinkLike(Protocol):
    """Owns the voice connection once started (rejoins, moves back); `stop()` disconnects."""

    @property
    def voice_client(self) -> voice_recv.VoiceRecvClient: ...
    @property
    def counters(self) -> VoiceCounters: ...
    @property
    def speakers(self) -> dict[int, str]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


LinkFactory = Callable[[voice_recv.VoiceRecvClient, Bridge, int], VoiceLinkLike]


class AlreadyBridged(Exception):
    def __init__(self, active: ActiveBridge) -> None:
        super().__init__(
            f"guild {active.guild_id} is already bridged from channel {active.channel_id}"
        )
        self.active = active


@dataclass(slots=True)
class ActiveBridge:
    guild_id: int
    channel_id: int
    room: str
    mode: str
    bridge: Bridge
    link: VoiceLinkLike

    @property
    def voice(self) -> voice_recv.VoiceRecvClient:
        return self.link.voice_client


BridgeWatcher = Callable[[ActiveBridge, bool], None]


def member_id(guild_id: int, channel_id: int) -> str:
    return f"discord:{guild_id}:{channel_id}"


class BridgeManager:
    def __init__(
        self,
        realtime: RealtimeClient,
        directory: RoomDirectory,
        link_factory: LinkFactory,
        metrics: Metrics,
        peer_config: PeerConfig | None = None,
    ) -> None:
        self._realtime = realtime
        self._directory = directory
        self._link_factory = link_factory
        self._metrics = metrics
        self._peer_config = peer_config or PeerConfig()
        self._active: dict[int, ActiveBridge] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._watchers: list[BridgeWatcher] = []
        metrics.watch_voice(
            lambda: [(a.link.counters, len(a.link.speakers)) for a in self._active.values()]
        )
        metrics.watch_media(lambda: [a.bridge.counters() for a in self._active.values()])
        metrics.state.watch_links(self.link_quality)

    def watch(self, watcher: BridgeWatcher) -> None:
        """Call `watcher(active, True)` after each bridge comes up, `(active, False)` after it
        goes down (synchronously: watchers start or cancel their own tasks)."""
        self._watchers.append(watcher)

    def _notify(self, active: ActiveBridge, up: bool) -> None:
        for watcher in self._watchers:
            try:
                watcher(active, up)
            except Exception:
                logger.exception("bridge watcher failed guild=%s", active.guild_id)

    def _lock(self, guild_id: int) -> asyncio.Lock:
        return self._locks.setdefault(guild_id, asyncio.Lock())

    def active(self, guild_id: int) -> ActiveBridge | None:
        return self._active.get(guild_id)

    async def start(self, channel: discord.VoiceChannel, room: str, mode: str) -> ActiveBridge:
        guild = channel.guild
        async with self._lock(guild.id):
            current = self._active.get(guild.id)
            if current is not None:
                if current.channel_id == channel.id and current.room == room:
                    return current
                raise AlreadyBridged(current)
            config = BridgeConfig(
                member_id=member_id(guild.id, channel.id),
                display_name=f"#{channel.name} ({guild.name})",
                kind=MemberKind.DISCORD,
                peer=self._peer_config,
            )
            bridge = Bridge(room, self._realtime, self._directory, config)
            bridge.peer.on_event(lambda event: self._observe_peer(bridge, event))
            await bridge.start()
            try:
                voice = await channel.connect(
                    cls=voice_recv.VoiceRecvClient, timeout=VOICE_CONNECT_TIMEOUT_S, self_deaf=False
                )
            except BaseException:
                await bridge.stop()
                raise
            link = self._link_factory(voice, bridge, guild.id)
            try:
                await link.start()
            except BaseException:
                await voice.disconnect(force=True)
                await bridge.stop()
                raise
            active = ActiveBridge(guild.id, channel.id, room, mode, bridge, link)
            self._active[guild.id] = active
            self._metrics.bridges.set(len(self._active))
            logger.info(
                "bridge up guild=%s channel=%s room=%s mode=%s", guild.id, channel.id, room, mode
            )
            self._notify(active, True)
            return active

    async def stop(self, guild_id: int, reason: str) -> ActiveBridge | None:
        async with self._lock(guild_id):
            active = self._active.pop(guild_id, None)
            if active is None:
                return None
            self._metrics.bridges.set(len(self._active))
            try:
                await active.link.stop()
            finally:
                await active.bridge.stop()
                self._metrics.retire_voice(active.link.counters)
                self._metrics.retire_media(active.bridge.counters())
            logger.info(
                "bridge down guild=%s channel=%s room=%s reason=%s",
                guild_id,
                active.channel_id,
                active.room,
                reason,
            )
            self._notify(active, False)
            return active

    def _observe_peer(self, bridge: Bridge, event: PeerEvent) -> None:
        if event is PeerEvent.RECOVERED and bridge.peer.last_recovery_s is not None:
            self._metrics.recovery_seconds.observe(bridge.peer.last_recovery_s)

    async def link_quality(self) -> list[LinkQuality]:
        """Each live bridge's link to its room (a bridge stopping meanwhile is left out)."""
        active = list(self._active.values())
        stats = await asyncio.gather(
            *(a.bridge.peer.stats() for a in active), return_exceptions=True
        )
        return [
            link_quality(a.guild_id, a.room, s)
            for a, s in zip(active, stats, strict=True)
            if not isinstance(s, BaseException)
        ]

    async def stop_all(self, reason: str) -> None:
        await asyncio.gather(
            *(self.stop(guild_id, reason) for guild_id in list(self._active)),
            return_exceptions=True,
        )
