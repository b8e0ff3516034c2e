"""`VoiceLink`: one Discord voice channel bound to one `Bridge`, kept that way.

In: every Discord user in the channel becomes one bridge input, track `dc:<guild>:<user>`,
their Opus passed through untouched with their RTP timestamps (`VoiceReceiver`). Out: the
room minus this bridge, played into the channel by one source (`BridgeSource`: a lone room
speaker passed through, the mix encoded, nothing sent while the room is quiet).

From `start()` the link owns the voice connection: it rejoins with the shared `Backoff`
policy when the connection is lost (kicked, discord.py giving up its own reconnect, or its
voice websocket task dying), goes back (a fresh connection) when the bot is moved to another
channel (bridging that other channel into the room would leak it there), restarts the player
or the receiver if either ends, and removes a user's track when they leave. `stop()` undoes
all of it and disconnects.

discord.py handles short outages by itself (voice websocket resume after 4015, reconnect
after a server move); the link leaves the connection alone for `RECONNECT_GRACE_S` then.
The voice websocket task dies on an exception discord.py does not catch (e.g. davey raising
in its MLS handlers) while the client still says it is connected: the health check sees the
finished task and rebuilds the connection. Every use of discord.py's and voice_recv's
internals, and why, is in `compat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
from discord.ext import voice_recv

from media.backoff import Backoff
from media.bridge import Bridge, SpeakerInput

from . import compat
from .counters import VoiceCounters
from .opus_loader import load_opus
from .receive import VoiceReceiver
from .send import BridgeSource, SendMode

__all__ = ["VoiceLink", "VoiceLinkState", "track_name"]

logger = logging.getLogger(__name__)

RECONNECT = Backoff(initial_s=1.0, max_s=30.0)
"""Rejoin policy: first attempt at once, then full-jitter delays capped at 30 s, forever."""
CONNECT_TIMEOUT_S = 20.0
"""One connection attempt (discord.py retries inside it up to five times)."""
RECONNECT_GRACE_S = 15.0
"""How long discord.py may spend reconnecting by itself before the link rebuilds."""
MOVE_SETTLE_S = 1.0
"""A move is acted on once the bot has been in the other channel, connected, this long
(discord.py follows a move by itself first; a second move mid-way would tangle the two)."""
HEALTH_CHECK_S = 1.0
"""Between checks of what has no event: the websocket task's death, a lagging cache."""
STALE_SPEAKER_S = 5.0
"""A speaker not in the channel (per the gateway cache) and silent this long is removed."""
STOP_TIMEOUT_S = 5.0


class VoiceLinkState(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


def track_name(guild_id: int, user_id: int) -> str:
    """The room track of one Discord user."""
    return f"dc:{guild_id}:{user_id}"


@dataclass(slots=True)
class _Speaker:
    input: SpeakerInput
    last_frame_at: float


class VoiceLink:
    """Binds a connected `voice_recv.VoiceRecvClient` to `bridge`; see the module docstring.

    ``guild_id`` defaults to the voice client's guild; ``counters`` to a fresh `VoiceCounters`
    (read them from `link.counters`); ``reconnect`` is the rejoin and move-back policy;
    ``send_mode`` `SendMode.MIX` restores the always-mix send path (for benches).
    """

    def __init__(
        self,
        voice_client: voice_recv.VoiceRecvClient,
        bridge: Bridge,
        guild_id: int | None = None,
        counters: VoiceCounters | None = None,
        *,
        reconnect: Backoff = RECONNECT,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reconnect_grace_s: float = RECONNECT_GRACE_S,
        send_mode: SendMode = SendMode.PASSTHROUGH,
    ) -> None:
        if not isinstance(voice_client, voice_recv.VoiceRecvClient):
            raise TypeError("connect with channel.connect(cls=voice_recv.VoiceRecvClient)")
        self._vc = voice_client
        self._client: discord.Client = voice_client.client
        self._bridge = bridge
        self.guild_id = guild_id if guild_id is not None else voice_client.guild.id
        self.channel_id = voice_client.channel.id
        self.counters = counters if counters is not None else VoiceCounters()
        self._cls: type[voice_recv.VoiceRecvClient] = type(voice_client)
        self._reconnect = reconnect
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_grace_s = reconnect_grace_s
        self._receiver = VoiceReceiver(
            self._on_frame, self.counters, on_reader_ended=self._on_reader_ended
        )
        self._send_mode = send_mode
        self._source: BridgeSource | None = None
        self._speakers: dict[int, _Speaker] = {}
        self._departed: set[int] = set()
        self._removals: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnecting_since: float | None = None
        self._moved_since: float | None = None
        self._state = VoiceLinkState.IDLE
        self._state_listeners: list[Callable[[VoiceLinkState, VoiceLinkState], None]] = []
        self._state_waiters: list[tuple[VoiceLinkState, asyncio.Future[None]]] = []

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> VoiceLinkState:
        return self._state

    @property
    def voice_client(self) -> voice_recv.VoiceRecvClient:
        """The current voice client (a new one after each rejoin)."""
        return self._vc

    @property
    def speakers(self) -> dict[int, str]:
        """Discord user id -> room track name, for users heard and not gone."""
        return {user_id: s.input.track_name for user_id, s in self._speakers.items()}

    def on_state_change(self, listener: Callable[[VoiceLinkState, VoiceLinkState], None]) -> None:
        """`listener(old, new)` on every change, on the event loop."""
        self._state_listeners.append(listener)

    async def wait_for_state(self, state: VoiceLinkState, timeout: float | None = None) -> None:
        if self._state is state:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (state, future)
        self._state_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            if entry in self._state_waiters:
                self._state_waiters.remove(entry)

    def _set_state(self, state: VoiceLinkState) -> None:
        old = self._state
        if state is old:
            return
        self._state = state
        logger.info(
            "voice link %s -> %s guild=%s channel=%s",
            old.value,
            state.value,
            self.guild_id,
            self.channel_id,
        )
        for wanted, future in list(self._state_waiters):
            if wanted is state and not future.done():
                future.set_result(None)
        for listener in list(self._state_listeners):
            try:
                listener(old, state)
            except Exception:
                logger.exception("voice link state listener failed")

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state is not VoiceLinkState.IDLE:
            raise RuntimeError(f"cannot start a link that is {self._state.value}")
        self._loop = asyncio.get_running_loop()
        try:
            load_opus()
        except (OSError, discord.DiscordException) as exc:
            # Not needed by our own paths (Opus in, Opus out); see opus_loader.
            logger.warning("libopus not loaded into discord.py: %s", exc)
        self._source = BridgeSource(self._bridge, self.counters, mode=self._send_mode)
        self._tasks = [
            asyncio.create_task(
                self._watch("voice_state_update", self._on_voice_state_update),
                name=f"voice-link-states-{self.guild_id}",
            ),
            asyncio.create_task(self._supervise(), name=f"voice-link-{self.guild_id}"),
        ]
        try:
            if self._vc.is_connected():
                await self._attach(self._vc)
            else:
                self._set_state(VoiceLinkState.RECONNECTING)
                self._wake.set()
        except BaseException:
            await self.stop(disconnect=False)
            raise

    async def stop(self, *, disconnect: bool = True) -> None:
        """Stop bridging; with `disconnect` (the default) also leave the voice channel."""
        if self._state is VoiceLinkState.STOPPED:
            return
        was_idle = self._state is VoiceLinkState.IDLE
        self._set_state(VoiceLinkState.STOPPED)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if was_idle:
            return
        vc = self._vc
        await self._detach(vc)
        if disconnect:
            guild = self._client.get_guild(self.guild_id)
            current = guild.voice_client if guild is not None else None
            if isinstance(current, voice_recv.VoiceRecvClient):
                # Ours, or one a cancelled rejoin left half-connected.
                await self._disconnect(current)
            compat.reap(vc)
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)
        for user_id in list(self._speakers):
            await self._remove_speaker(user_id)
        if self._source is not None:
            self._source.close()

    # -- attaching to a voice client ----------------------------------------------------------

    async def _attach(self, vc: voice_recv.VoiceRecvClient) -> None:
        self._vc = vc
        self._reconnecting_since = self._moved_since = None
        vc.add_listener(self._on_member_disconnect, name="on_voice_member_disconnect")
        vc.add_listener(self._on_speaking_state, name="on_voice_member_speaking_state")
        await self._ensure_media(vc, restart=False)
        self._set_state(VoiceLinkState.CONNECTED)

    async def _ensure_media(self, vc: voice_recv.VoiceRecvClient, *, restart: bool) -> None:
        """Receiver listening and player playing on `vc`; a failure is retried next check."""
        if not self._receiver.listening:
            if restart:
                logger.warning("voice receiver ended guild=%s: restarting", self.guild_id)
                self.counters.listener_restarts += 1
            await self._receiver.detach()
            try:
                self._receiver.attach(vc)
            except Exception:
                logger.exception("starting the voice receiver failed guild=%s", self.guild_id)
                await self._receiver.detach()
        if not (vc.is_playing() or vc.is_paused()):  # paused: nobody in the room speaks
            if restart:
                logger.warning("Discord player ended guild=%s: restarting", self.guild_id)
                self.counters.player_restarts += 1
            await self._detach_player(vc)  # a finished player's thread
            assert self._source is not None
            self._source.bind(vc)
            try:
                vc.play(self._source, after=self._on_player_ended)
            except discord.ClientException as exc:
                logger.warning(
                    "starting the Discord player failed guild=%s error=%s", self.guild_id, exc
                )

    async def _detach(self, vc: voice_recv.VoiceRecvClient) -> None:
        """Stop our player and receiver on `vc` and wait for their threads."""
        await self._detach_player(vc)
        await self._receiver.detach()

    async def _detach_player(self, vc: voice_recv.VoiceRecvClient) -> None:
        player = compat.player_thread(vc)
        vc.stop_playing()
        if player is not None and player.is_alive():
            await asyncio.to_thread(player.join, STOP_TIMEOUT_S)

    async def _disconnect(self, vc: voice_recv.VoiceRecvClient) -> None:
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await vc.disconnect(force=True)
        except (TimeoutError, discord.DiscordException, OSError) as exc:
            logger.warning("voice disconnect failed guild=%s error=%r", self.guild_id, exc)
        compat.reap(vc)

    def _is_current(self, vc: voice_recv.VoiceRecvClient) -> bool:
        """`vc` is still the guild's registered voice client (not cleaned up)."""
        guild = self._client.get_guild(self.guild_id)
        return guild is not None and guild.voice_client is vc

    # -- thread callbacks --------------------------------------------------------------------

    def _on_player_ended(self, error: Exception | None) -> None:
        # discord.py's player thread.
        if error is not None:
            logger.warning("Discord player ended with %r guild=%s", error, self.guild_id)
        self._wake_threadsafe()

    def _on_reader_ended(self, error: Exception | None) -> None:
        self._wake.set()

    def _wake_threadsafe(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    # -- frames in (event loop) --------------------------------------------------------------

    def _on_frame(self, user_id: int, payload: bytes, timestamp: int) -> None:
        if self._state is VoiceLinkState.STOPPED:
            return
        if user_id in self._departed:
            self.counters.departed_dropped += 1
            return
        speaker = self._speakers.get(user_id)
        now = time.monotonic()
        if speaker is None:
            guild = self._client.get_guild(self.guild_id)
            member = guild.get_member(user_id) if guild is not None else None
            name = member.display_name if member is not None else str(user_id)
            track = track_name(self.guild_id, user_id)
            speaker = self._speakers[user_id] = _Speaker(
                self._bridge.speaker(track, name, str(user_id)), now
            )
            logger.info("discord speaker guild=%s user=%s track=%s", self.guild_id, user_id, track)
        speaker.last_frame_at = now
        speaker.input.push(payload, timestamp)
        self.counters.frames_forwarded += 1

    # -- who is in the channel ---------------------------------------------------------------

    async def _watch(self, event: str, handler: Callable[..., None]) -> None:
        """Call `handler` for every `event` the client dispatches, until cancelled.

        `Client.wait_for` runs its check synchronously for each dispatch, so a check that
        never matches sees every event and misses none (a plain Client has no add_listener).
        """

        def check(*args: Any) -> bool:
            try:
                handler(*args)
            except Exception:
                logger.exception("voice link failed handling %s", event)
            return False

        await self._client.wait_for(event, check=check)

    def _on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        if member.guild.id != self.guild_id:
            return
        if self._client.user is not None and member.id == self._client.user.id:
            self._wake.set()  # moved or disconnected: the supervisor looks
            return
        was_here = before.channel is not None and before.channel.id == self.channel_id
        is_here = after.channel is not None and after.channel.id == self.channel_id
        if is_here:
            self._departed.discard(member.id)
        elif was_here:
            self._user_left(member.id, "voice state")

    async def _on_member_disconnect(self, member: discord.Member | None, ssrc: int | None) -> None:
        # voice_recv: the voice server's CLIENT_DISCONNECT (op 13), for this connection only.
        user_id = member.id if member is not None else self._receiver.user_of_ssrc(ssrc)
        if user_id is not None:
            self._user_left(user_id, "voice disconnect")

    async def _on_speaking_state(
        self, member: discord.Member | None, ssrc: int, state: Any
    ) -> None:
        # voice_recv: SPEAKING (op 5) has just mapped ssrc -> user.
        if member is not None:
            self._departed.discard(member.id)
        self._receiver.mapped(ssrc)

    def _user_left(self, user_id: int, why: str) -> None:
        self._departed.add(user_id)
        if user_id in self._speakers:
            logger.info("discord speaker left guild=%s user=%s (%s)", self.guild_id, user_id, why)
            task = asyncio.create_task(
                self._remove_speaker(user_id), name=f"voice-link-remove-{user_id}"
            )
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def _remove_speaker(self, user_id: int) -> None:
        speaker = self._speakers.pop(user_id, None)
        if speaker is None:
            return
        self.counters.speakers_removed += 1
        try:
            await self._bridge.remove_speaker(speaker.input.track_name)
        except Exception:
            logger.exception("removing track %s failed", speaker.input.track_name)

    def _reconcile_speakers(self, vc: voice_recv.VoiceRecvClient) -> None:
        """Leaves missed while we were away: quiet speakers the cache says are not here."""
        channel = vc.channel
        if channel is None:
            return
        present = set(channel.voice_states)
        now = time.monotonic()
        for user_id, speaker in list(self._speakers.items()):
            if user_id not in present and now - speaker.last_frame_at > STALE_SPEAKER_S:
                self._user_left(user_id, "not in the channel")

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            try:
                async with asyncio.timeout(HEALTH_CHECK_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("voice link check failed guild=%s", self.guild_id)

    async def _check(self) -> None:
        vc = self._vc
        self._receiver.expire()
        if self._dead(vc):
            await self._rejoin()
            return
        if not vc.is_connected():
            now = time.monotonic()
            if self._reconnecting_since is None:
                self._reconnecting_since = now
                self._set_state(VoiceLinkState.RECONNECTING)
            elif now - self._reconnecting_since > self._reconnect_grace_s:
                logger.warning(
                    "voice reconnect stuck for %.0f s guild=%s: rebuilding",
                    now - self._reconnecting_since,
                    self.guild_id,
                )
                await self._rejoin()
            return
        self._reconnecting_since = None
        if vc.channel is None or vc.channel.id != self.channel_id:
            now = time.monotonic()
            if self._moved_since is None:
                self._moved_since = now
                self._set_state(VoiceLinkState.RECONNECTING)
            elif now - self._moved_since >= MOVE_SETTLE_S:
                # A fresh connection, not vc.move_to(), which stalls (compat, workaround 7).
                logger.info(
                    "bot is in channel=%s, not its bridged channel=%s guild=%s: going back",
                    vc.channel.id if vc.channel is not None else None,
                    self.channel_id,
                    self.guild_id,
                )
                self.counters.moves_reverted += 1
                await self._rejoin()
            return
        self._moved_since = None
        await self._ensure_media(vc, restart=True)
        self._reconcile_speakers(vc)
        self._set_state(VoiceLinkState.CONNECTED)

    def _dead(self, vc: voice_recv.VoiceRecvClient) -> bool:
        if not self._is_current(vc):
            return True  # cleaned up: kicked, disconnected, or discord.py gave up
        dead = compat.dead_voice_websocket(vc)
        if dead is not None:
            if dead.error is not None:
                logger.warning(
                    "voice websocket task died guild=%s error=%r", self.guild_id, dead.error
                )
            return True
        return False

    async def _rejoin(self) -> None:
        self._set_state(VoiceLinkState.RECONNECTING)
        old = self._vc
        await self._detach(old)
        if self._is_current(old):
            await self._disconnect(old)  # moved away, stuck, or its websocket task died
        else:
            compat.reap(old)
        for delay in self._reconnect.delays():
            await asyncio.sleep(delay)
            guild = self._client.get_guild(self.guild_id)
            channel = guild.get_channel(self.channel_id) if guild is not None else None
            if not isinstance(channel, (discord.VoiceChannel, discord.StageChannel)):
                logger.warning(
                    "voice channel %s not found guild=%s", self.channel_id, self.guild_id
                )
                self.counters.reconnect_failures += 1
                continue
            stale = guild.voice_client  # type: ignore[union-attr]
            if stale is not None:
                await self._disconnect(stale)  # type: ignore[arg-type]
            try:
                vc = await channel.connect(
                    cls=self._cls, timeout=self._connect_timeout_s, reconnect=True
                )
            except (TimeoutError, discord.DiscordException, OSError) as exc:
                self.counters.reconnect_failures += 1
                logger.warning(
                    "voice rejoin failed guild=%s channel=%s error=%r",
                    self.guild_id,
                    self.channel_id,
                    exc,
                )
                continue
            self.counters.reconnects += 1
            logger.info("voice rejoined guild=%s channel=%s", self.guild_id, self.channel_id)
            await self._attach(vc)
            return
        logger.error("voice rejoin gave up guild=%s channel=%s", self.guild_id, self.channel_id)
