"""`Bridge`: one voice channel (or any set of speakers) joined to one room.

Input: per-speaker Opus packet streams (the Discord adapter, or generators in tests). Each
speaker is published as its own track, lazily on its first packet, without transcoding, and
unpublished when it leaves. Output: a never-ending 20 ms PCM stream made from every other
member's tracks — never its own — through jitter buffers and the mixer (`read_frame()` for a
consumer with its own clock, `frames()` paced from a wall-clock origin otherwise), or for a
consumer that sends Opus, `read_output()`: a lone speaker's packets undecoded, the mix only
when there is something to mix.

The bridge follows the room through a `RoomFollower` (the reconciler): late joiners and their
tracks are subscribed, leavers unsubscribed, and tracks republished under a new session after
a recovery are picked up again. After its own peer recovered it announces its tracks under the
new session. Its own speakers' speaking state goes back into the directory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from .audio import FRAME_MS, FRAME_SAMPLES, OPUS_SILENCE_FRAME, SAMPLE_RATE_HZ
from .audio.inbound import InboundOpus
from .audio.mixdown import Mixdown, MixdownOutput, StreamTotals
from .audio.mixer import Pcm
from .audio.source import OpusSource
from .backoff import Backoff
from .follower import RoomFollower
from .peer import PeerConfig, PeerEvent, PeerUnavailable, RealtimePeer
from .realtime import RealtimeClient, RealtimeError, TrackLocator
from .rooms import MemberKind, RoomDirectory, TrackInfo

__all__ = ["Bridge", "BridgeConfig", "BridgeCounters", "SpeakerInput"]

logger = logging.getLogger(__name__)

SPEAKING_HOLD_MS = 300
"""A speaker counts as speaking until this long after its last non-silent packet."""
KEEPALIVE_S = 5.0
"""A quiet speaker's track gets a silence frame this often: the SFU collects tracks that
receive nothing for 30 s, and muting must never look like leaving."""
TICK_S = 0.1
PUBLISH_RETRY = Backoff(initial_s=0.2, max_s=2.0)
"""A speaker whose publish failed is tried again on its next packet after this."""


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    member_id: str
    display_name: str
    kind: MemberKind = MemberKind.DISCORD
    peer: PeerConfig = field(default_factory=PeerConfig)


@dataclass(frozen=True, slots=True)
class BridgeCounters:
    """Everything the bridge lost, concealed or rebuilt since it started (monotonic)."""

    streams: StreamTotals
    decode_errors: int
    source_dropped: int
    """Packets of this bridge's speakers dropped before they could be sent (a stalled sender)."""
    peer_recoveries: int
    resyncs: int
    """Room event streams re-entered from a snapshot."""
    pull_failures: int
    """Subscription attempts that failed and were retried."""


class SpeakerInput:
    """One speaker's Opus packets into the room. `push()` is called on the event loop."""

    def __init__(
        self, bridge: Bridge, track_name: str, display_name: str, user_id: str | None
    ) -> None:
        self.track_name = track_name
        self.display_name = display_name
        self.user_id = user_id
        self.source = OpusSource(track_name)
        self._bridge = bridge
        self._published = False
        self._publishing: asyncio.Task[None] | None = None
        self._publish_failures = 0
        self._publish_not_before = 0.0
        self._origin: tuple[float, int] | None = None  # wall clock -> timestamp, for None
        self.last_packet_at = 0.0
        self.last_voice_at = 0.0
        self.speaking = False
        self._last_timestamp = 0

    def push(self, payload: bytes, timestamp: int | None = None) -> None:
        now = time.monotonic()
        if timestamp is None:
            timestamp = self._wall_clock_timestamp(now)
        self._last_timestamp = timestamp
        self.last_packet_at = now
        if payload != OPUS_SILENCE_FRAME:
            self.last_voice_at = now
        self.source.push(payload, timestamp)
        if self._publishing is None and now >= self._publish_not_before:
            self._publishing = asyncio.create_task(
                self._bridge._publish_speaker(self), name=f"publish-{self.track_name}"
            )

    def _wall_clock_timestamp(self, now: float) -> int:
        """The frame slot of `now`, but never the previous packet's or an earlier one: a push
        that comes a little late must not repeat a timestamp (a receiver drops duplicates)."""
        if self._origin is None:
            self._origin = (now, 0)
            return 0
        frames = round((now - self._origin[0]) * 1000 / FRAME_MS)
        slot = (self._origin[1] + frames * FRAME_SAMPLES) & 0xFFFFFFFF
        following = (self._last_timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        ahead = (slot - following) & 0xFFFFFFFF
        return following if ahead >= 0x80000000 else slot

    def keepalive(self, now: float) -> None:
        if self._publishing is not None and now - self.last_packet_at >= KEEPALIVE_S:
            gap = int((now - self.last_packet_at) * SAMPLE_RATE_HZ) // FRAME_SAMPLES * FRAME_SAMPLES
            self.push(OPUS_SILENCE_FRAME, (self._last_timestamp + gap) & 0xFFFFFFFF)


class Bridge:
    def __init__(
        self,
        room: str,
        client: RealtimeClient,
        directory: RoomDirectory,
        config: BridgeConfig,
    ) -> None:
        self.room = room
        self.config = config
        self._directory = directory
        self._peer = RealtimePeer(client, config.peer)
        self._mixdown = Mixdown()
        self._speakers: dict[str, SpeakerInput] = {}
        self._published: dict[str, TrackInfo] = {}  # track name -> as announced
        self._follower = RoomFollower(room, config.member_id, directory, self._peer, self)
        self._tasks: list[asyncio.Task[None]] = []
        self._source_dropped = 0  # of speakers that left
        self._announcing = asyncio.Lock()
        self._stopped = False

    @property
    def peer(self) -> RealtimePeer:
        return self._peer

    @property
    def mixdown(self) -> Mixdown:
        return self._mixdown

    @property
    def follower(self) -> RoomFollower:
        return self._follower

    def counters(self) -> BridgeCounters:
        return BridgeCounters(
            streams=self._mixdown.totals(),
            decode_errors=self._mixdown.stats.decode_errors,
            source_dropped=self._source_dropped
            + sum(s.source.dropped for s in self._speakers.values()),
            peer_recoveries=self._peer.recoveries,
            resyncs=self._follower.stats.resyncs,
            pull_failures=self._follower.stats.pull_failures,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._peer.start()
        self._peer.on_event(self._on_peer_event)
        await self._directory.join(
            self.room, self.config.member_id, self.config.kind, self.config.display_name
        )
        await self._follower.start()
        self._tasks = [asyncio.create_task(self._tick(), name=f"bridge-tick-{self.room}")]
        logger.info(
            "bridge started room=%s member=%s session_id=%s",
            self.room,
            self.config.member_id,
            self._peer.session_id,
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._follower.stop()
        tasks = [*self._tasks, *self._publishing_tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._directory.leave(self.room, self.config.member_id)
        await self._peer.close()
        self._mixdown.close()
        logger.info("bridge stopped room=%s member=%s", self.room, self.config.member_id)

    def _publishing_tasks(self) -> list[asyncio.Task[None]]:
        return [s._publishing for s in self._speakers.values() if s._publishing is not None]

    # -- input: local speakers ----------------------------------------------------------------

    def speaker(
        self, track_name: str, display_name: str = "", user_id: str | None = None
    ) -> SpeakerInput:
        """The input for one speaker (created on first use); its track publishes lazily."""
        speaker = self._speakers.get(track_name)
        if speaker is None:
            speaker = SpeakerInput(self, track_name, display_name or track_name, user_id)
            self._speakers[track_name] = speaker
        return speaker

    async def _publish_speaker(self, speaker: SpeakerInput) -> None:
        try:
            await self._peer.publish(speaker.track_name, speaker.source)
        except (RealtimeError, PeerUnavailable, ValueError) as exc:
            speaker._publish_failures += 1
            delay = PUBLISH_RETRY.delay_s(speaker._publish_failures)
            logger.warning(
                "publish failed room=%s track=%s retry_in_s=%.2f error=%s",
                self.room,
                speaker.track_name,
                delay,
                exc,
            )
            speaker._publish_not_before = time.monotonic() + delay
            speaker._publishing = None  # a packet after the delay tries again
            return
        speaker._published = True
        speaker._publish_failures = 0
        try:
            await self._announce(speaker)
        except Exception as exc:  # the tick announces it again
            logger.warning(
                "announce failed room=%s track=%s error=%s", self.room, speaker.track_name, exc
            )

    async def _announce(self, speaker: SpeakerInput) -> None:
        """Make the room list `speaker`'s track under the peer's current session. Recorded
        only once the directory took it, so a failure (a shared directory that is
        unreachable) is tried again by the next tick."""
        async with self._announcing:
            if self._speakers.get(speaker.track_name) is not speaker:
                return  # it left meanwhile
            track = TrackInfo(
                self._peer.session_id, speaker.track_name, speaker.display_name, speaker.user_id
            )
            old = self._published.get(speaker.track_name)
            if old == track:
                return
            if old is not None:
                await self._directory.unpublish(self.room, self.config.member_id, old)
                del self._published[speaker.track_name]
            await self._directory.publish(self.room, self.config.member_id, track)
            self._published[speaker.track_name] = track

    async def remove_speaker(self, track_name: str) -> None:
        speaker = self._speakers.pop(track_name, None)
        if speaker is None:
            return
        self._source_dropped += speaker.source.dropped
        if speaker._publishing is not None:
            await asyncio.gather(speaker._publishing, return_exceptions=True)
        async with self._announcing:
            track = self._published.pop(track_name, None)
        if track is not None:
            try:
                await self._directory.unpublish(self.room, self.config.member_id, track)
            except Exception as exc:  # a shared directory expires it with this member
                logger.warning(
                    "unannounce failed room=%s track=%s error=%s", self.room, track_name, exc
                )
        if speaker._published:
            await self._peer.unpublish(track_name)

    # -- output -----------------------------------------------------------------------------

    def read_frame(self) -> Pcm:
        """The next 20 ms of the room minus this bridge (mono 48 kHz int16); thread-safe."""
        return self._mixdown.read_frame()

    def read_output(self, *, passthrough: bool = True) -> MixdownOutput:
        """The next 20 ms for a consumer that sends Opus (thread-safe): one room speaker's
        packet as it came, or the mix to encode, or nothing (see `Mixdown.read_output`)."""
        return self._mixdown.read_output(passthrough=passthrough)

    def wake_on_audio(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` once, on the event loop, when the next packet from the room
        arrives (for a consumer that stopped reading while the room was quiet)."""
        self._mixdown.wake_on_packet(callback)

    async def frames(self) -> AsyncIterator[Pcm]:
        """`read_frame()` every 20 ms from a wall-clock origin, forever (silence when quiet)."""
        origin = time.monotonic()
        index = 0
        while True:
            index += 1
            await asyncio.sleep(max(0.0, origin + index * FRAME_MS / 1000 - time.monotonic()))
            yield self._mixdown.read_frame()

    # -- following the room (RoomFollower's sink) ---------------------------------------------

    def added(self, track: TrackInfo, inbound: InboundOpus) -> None:
        self._mixdown.add(TrackLocator(track.session_id, track.track_name), inbound)

    def removed(self, track: TrackInfo) -> None:
        self._mixdown.remove(TrackLocator(track.session_id, track.track_name))

    def _on_peer_event(self, event: PeerEvent) -> None:
        if event is not PeerEvent.RECOVERED or self._stopped:
            return
        # The peer republished under a new session id: tell the room where to find us.
        self._tasks = [t for t in self._tasks if not t.done()]
        for speaker in self._speakers.values():
            if speaker._published:
                self._tasks.append(asyncio.create_task(self._announce(speaker)))
        self._follower.wake()

    async def _tick(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            try:
                for speaker in list(self._speakers.values()):
                    speaker.keepalive(now)
                    if not speaker._published:
                        continue
                    await self._announce(speaker)  # a no-op unless an announcement is due
                    speaking = now - speaker.last_voice_at < SPEAKING_HOLD_MS / 1000
                    if speaking != speaker.speaking:
                        await self._directory.set_speaking(
                            self.room, self.config.member_id, speaker.track_name, speaking
                        )
                        speaker.speaking = speaking
            except Exception as exc:  # a shared directory that is unreachable: next tick
                if not failing:
                    logger.warning("room directory failing room=%s error=%s", self.room, exc)
                failing = True
                continue
            if failing:
                logger.info("room directory back room=%s", self.room)
                failing = False
