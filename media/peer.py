"""`RealtimePeer`: one Realtime session and the one `RTCPeerConnection` it owns.

It publishes pre-encoded Opus sources and subscribes to other sessions' tracks as Opus
packets (RTP tap, no decoder), one negotiation at a time. Its SDP keeps what the SFU has
agreed (payload types, extension ids, rejected m-lines), as a strict SFU requires.

Every request is tried once: a negotiation runs under the peer's lock and nothing sleeps
while holding it. Whoever wants a track (the room reconciler, `media/follower.py`) retries a
pull that failed; a publication stays registered and is pushed again after a recovery.

Recovery. When the session is gone (410), the connection failed, a negotiation broke off
midway, or the watchdog finds the SFU has forgotten the session, the peer builds a new
connection and session, pushes every publication, emits RECOVERED at once (so the owner can
announce the new session id) and then re-pulls every subscription once; whatever is not
back yet is the reconciler's to retry. The `OpusSource` and `InboundOpus` objects callers
hold keep working across that. aiortc has no ICE restart and notices a dead path only
through ICE consent (~30 s), so the watchdog looks for silence instead: RTCP flows every
0.5-1.5 s on any live stream, and 1.5 s without a packet makes it ask the SFU (one short GET)
whether the session still exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket

from .aiortc_compat import enlarge_receive_buffers, install_rtcp_observer, install_tap
from .audio.handover import replace_track
from .audio.idle import IdleTrack
from .audio.inbound import InboundOpus, InboundStats
from .audio.source import OpusSource
from .backoff import Backoff
from .realtime import (
    PeerNotReady,
    RealtimeClient,
    RealtimeError,
    RealtimeItemError,
    SessionDescription,
    SessionGone,
    TrackLocator,
    TrackRequest,
    TrackResult,
    TransientError,
)
from .sdp_shaping import (
    NegotiatedMap,
    rejected_mids,
    set_local_description,
    shape_answer,
    shape_offer,
)

__all__ = [
    "PeerConfig",
    "PeerEvent",
    "PeerState",
    "PeerStats",
    "PeerUnavailable",
    "RealtimePeer",
    "TrackStats",
]

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.25
RECOVERY_REQUEST_TIMEOUT_S = 1.0
"""sessions/new during a recovery: a connection attempt made while the network was down
waits for TCP's SYN backoff (1 s, 3 s, 7 s...) after it returns; a fresh attempt does not."""
RECOVERY_ATTEMPT_TIMEOUT_S = 3.0
"""One rebuild attempt (close, sessions/new, push) gives up after this: a request sent into a
dead network would otherwise wait for TCP's retransmission backoff long after it returned."""


class PeerState(Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECOVERING = "recovering"
    CLOSED = "closed"


class PeerEvent(Enum):
    CONNECTED = "connected"
    FAILED = "failed"
    RECOVERED = "recovered"
    CLOSED = "closed"


class PeerUnavailable(Exception):
    """The peer is rebuilding its session (or closed): try again after RECOVERED."""


@dataclass(frozen=True, slots=True)
class PeerConfig:
    ice_servers: tuple[RTCIceServer, ...] = ()
    recovery: Backoff = field(default_factory=lambda: Backoff(initial_s=0.1, max_s=1.0))
    """Between rebuild attempts. A short cap: audio should be back within ~1 s of the SFU."""
    silence_s: float = 1.5
    """No packet from the SFU for this long (RTCP comes every 0.5-1.5 s per stream) makes the
    watchdog ask whether the session still exists."""
    probe_timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TrackStats:
    name: str
    direction: str  # "send" | "recv"
    packets: int
    bytes: int
    lost: int
    jitter_ms: float | None
    rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class PeerStats:
    session_id: str
    state: PeerState
    recoveries: int
    tracks: tuple[TrackStats, ...]


@dataclass(slots=True)
class _Publication:
    name: str
    source: OpusSource
    transceiver: RTCRtpTransceiver | None = None
    """None: not pushed on the current session."""


class RealtimePeer:
    def __init__(self, client: RealtimeClient, config: PeerConfig | None = None) -> None:
        self._client = client
        self._config = config or PeerConfig()
        self._lock = asyncio.Lock()
        self._pc: RTCPeerConnection | None = None
        self._session_id = ""
        self._state = PeerState.NEW
        self._numbering = NegotiatedMap()
        self._rejected: set[str] = set()
        self._published: dict[str, _Publication] = {}
        self._inbounds: dict[TrackLocator, InboundOpus] = {}
        self._mid_of: dict[TrackLocator, str] = {}  # live subscriptions
        self._inbound_by_mid: dict[str, InboundOpus] = {}
        self._reusable: list[RTCRtpTransceiver] = []
        self._listeners: list[Callable[[PeerEvent], None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._operation: asyncio.Timeout | None = None
        self._touched = False  # the running negotiation changed the connection
        self._failed_at = 0.0
        self._arrivals = 0  # RTP and RTCP packets from the SFU, for the watchdog
        self.recoveries = 0
        self.last_recovery_s: float | None = None
        """Seconds from noticing the failure to RECOVERED, for the last recovery."""

    # -- state and events ------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def state(self) -> PeerState:
        return self._state

    def on_event(self, listener: Callable[[PeerEvent], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: PeerEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("peer event listener failed event=%s", event.value)

    def _set_state(self, state: PeerState) -> None:
        if state is self._state:
            return
        logger.info(
            "peer state session_id=%s %s->%s", self._session_id, self._state.value, state.value
        )
        self._state = state

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self._state in (PeerState.CLOSED, PeerState.RECOVERING):
            return  # an old connection being torn down
        if pc.connectionState == "connected":
            self._set_state(PeerState.CONNECTED)
            self._emit(PeerEvent.CONNECTED)
        elif pc.connectionState in ("failed", "closed"):
            self._start_recovery(f"connection {pc.connectionState}")

    # -- connection lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        session_id = (await self._client.new_session()).session_id  # retried, outside the lock
        async with self._lock:
            self._open(session_id)
            self._set_state(PeerState.CONNECTING)
        self._watchdog = asyncio.create_task(
            self._watch(), name=f"peer-watchdog-{self._session_id}"
        )

    def _open(self, session_id: str) -> None:
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=list(self._config.ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            )
        )
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        pc.on("track", lambda track: self._tap_new_receivers(pc))
        self._numbering = NegotiatedMap()
        self._rejected = set()
        self._inbound_by_mid = {}
        self._mid_of = {}
        self._reusable = []
        self._session_id = session_id
        self._pc = pc
        logger.info("peer session opened session_id=%s", self._session_id)

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()

    async def close(self) -> None:
        self._set_state(PeerState.CLOSED)
        self._cancel_operation()
        tasks = [t for t in (self._recovery, self._watchdog) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self._lock:
            for inbound in self._inbounds.values():
                inbound.close()
            await self._close_pc()
        self._emit(PeerEvent.CLOSED)

    def _cancel_operation(self) -> None:
        """End the negotiation in flight: its session is being replaced."""
        if self._operation is not None and self._operation.expired() is False:
            self._operation.reschedule(asyncio.get_running_loop().time())

    def _start_recovery(self, reason: str) -> None:
        if self._state is PeerState.CLOSED:
            return
        if self._recovery is not None and not self._recovery.done():
            return
        logger.warning("peer failed session_id=%s reason=%s", self._session_id, reason)
        self._failed_at = time.monotonic()
        self._set_state(PeerState.RECOVERING)
        self._cancel_operation()
        self._emit(PeerEvent.FAILED)
        self._recovery = asyncio.create_task(
            self._recover(), name=f"peer-recovery-{self._session_id}"
        )

    async def _recover(self) -> None:
        old = self._session_id
        for delay in self._config.recovery.delays():
            await asyncio.sleep(delay)  # never under the lock
            try:
                async with asyncio.timeout(RECOVERY_ATTEMPT_TIMEOUT_S):
                    async with self._lock:
                        if self._state is PeerState.CLOSED:
                            return
                        await self._rebuild()
                        connected = self._pc is not None and self._pc.connectionState == "connected"
                        self._set_state(PeerState.CONNECTED if connected else PeerState.CONNECTING)
            except (RealtimeError, OSError, ValueError, TimeoutError) as exc:
                logger.warning(
                    "peer recovery attempt failed old_session_id=%s error=%s", old, exc or "timeout"
                )
                continue
            break
        else:
            logger.error("peer recovery gave up old_session_id=%s", old)
            self._set_state(PeerState.CLOSED)
            async with self._lock:
                await self._close_pc()
            self._emit(PeerEvent.CLOSED)
            return
        self.recoveries += 1
        self.last_recovery_s = time.monotonic() - self._failed_at
        logger.info(
            "peer recovered old_session_id=%s session_id=%s recovery_s=%.3f",
            old,
            self._session_id,
            self.last_recovery_s,
        )
        self._emit(PeerEvent.RECOVERED)
        # Once; the reconciler retries what is not back yet (a publisher that is rebuilding too).
        failed = await self.pull(list(self._inbounds.values()))
        if failed:
            logger.info(
                "peer re-pull incomplete session_id=%s pending=%d", self._session_id, len(failed)
            )

    async def _rebuild(self) -> None:
        await self._close_pc()
        # Once: the recovery loop is the retry, and it never sleeps under the lock.
        created = await self._client.new_session(retry=False, timeout_s=RECOVERY_REQUEST_TIMEOUT_S)
        self._open(created.session_id)
        for publication in self._published.values():
            publication.transceiver = None
        for inbound in self._inbounds.values():
            inbound.restart()
        if self._published:
            try:
                failures = await self._push(list(self._published.values()))
            except (TransientError, PeerNotReady, SessionGone):
                raise  # the next attempt may fare better
            except RealtimeError as exc:
                # Refused as a whole (4xx): pushing the same again would loop forever.
                failures = {name: exc for name in self._published}
            for name, error in failures.items():
                logger.warning(
                    "publication dropped in recovery session_id=%s track=%s error=%s",
                    self._session_id,
                    name,
                    error,
                )
                self._published.pop(name, None)

    async def _negotiate[T](self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one negotiation under the lock. A gone session or a negotiation that broke off
        after changing the connection starts a recovery; the caller gets `PeerUnavailable`."""
        async with self._lock:
            if self._state in (PeerState.RECOVERING, PeerState.CLOSED) or self._pc is None:
                raise PeerUnavailable(f"peer is {self._state.value}")
            self._touched = False
            try:
                async with asyncio.timeout(None) as scope:
                    self._operation = scope
                    return await operation()
            except TimeoutError:
                raise PeerUnavailable("the session is being rebuilt") from None
            except SessionGone as exc:
                self._operation = None
                self._start_recovery(f"session gone: {exc}")
                raise PeerUnavailable("the session is gone; rebuilding it") from exc
            except (RealtimeError, ValueError, InvalidStateError, InvalidAccessError) as exc:
                # aiortc refusing a description leaves the connection as unknown as a request
                # that failed midway: only a new session is certain.
                if not self._touched:
                    raise
                self._operation = None
                self._start_recovery(f"negotiation broke off: {exc!r}")
                raise PeerUnavailable("the negotiation broke off; rebuilding") from exc
            finally:
                self._operation = None

    async def _until_available(self) -> None:
        recovery = self._recovery
        if recovery is not None and not recovery.done():
            await asyncio.shield(recovery)

    # -- watchdog ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        last_rx = -1
        quiet_since = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            rx = self._arrivals
            if rx != last_rx or self._state is not PeerState.CONNECTED or not self._carrying():
                last_rx, quiet_since = rx, now
                continue
            if now - quiet_since < self._config.silence_s:
                continue
            if await self._probe():
                quiet_since = time.monotonic()  # alive but quiet: ask again after another spell

    def _carrying(self) -> bool:
        """Something should bring packets from the SFU: a pushed track (its receiver reports)
        or a live subscription (its media and sender reports)."""
        return bool(self._mid_of) or any(
            p.transceiver is not None for p in self._published.values()
        )

    async def _probe(self) -> bool:
        """Ask the SFU whether the session exists; False when it did not answer."""
        session_id = self._session_id
        try:
            await self._client.probe_session(session_id, self._config.probe_timeout_s)
        except SessionGone:
            if session_id == self._session_id:
                self._start_recovery("the SFU no longer knows the session")
            return True
        except RealtimeError as exc:
            logger.info("sfu unreachable session_id=%s error=%s", session_id, exc)
            return False
        return True

    # -- SDP -------------------------------------------------------------------------------

    def _learn(self, description: aiortc_sdp.SessionDescription) -> None:
        self._numbering.learn(description)
        self._rejected |= rejected_mids(description)

    async def _local_offer(self) -> SessionDescription:
        assert self._pc is not None
        self._touched = True

        def shape(d: aiortc_sdp.SessionDescription) -> None:
            shape_offer(d, self._numbering, self._rejected)

        offer = await set_local_description(self._pc, "offer", shape)
        enlarge_receive_buffers(self._pc)  # a bridge may receive many tracks at once
        return SessionDescription("offer", offer)

    async def _apply_answer(self, answer: SessionDescription | None) -> None:
        assert self._pc is not None
        if answer is None or answer.type != "answer":
            raise RealtimeError("the SFU did not answer the offer")
        parsed = aiortc_sdp.SessionDescription.parse(answer.sdp)
        parsed.type = "answer"
        self._learn(parsed)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

    async def _answer_sfu_offer(self, offer: SessionDescription) -> SessionDescription:
        assert self._pc is not None
        self._touched = True
        parsed = aiortc_sdp.SessionDescription.parse(offer.sdp)
        parsed.type = "offer"
        self._learn(parsed)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))

        def shape(d: aiortc_sdp.SessionDescription) -> None:
            shape_answer(d, parsed, self._rejected)

        answer = await set_local_description(self._pc, "answer", shape)
        enlarge_receive_buffers(self._pc)
        return SessionDescription("answer", answer)

    def _tap_new_receivers(self, pc: RTCPeerConnection) -> None:
        # Runs inside setRemoteDescription, before aiortc starts any receiver.
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if getattr(receiver, "_switchboard_tapped", False):
                continue
            receiver._switchboard_tapped = True  # type: ignore[attr-defined]

            async def route(
                packet: RtpPacket, arrival_ms: int, t: RTCRtpTransceiver = transceiver
            ) -> None:
                self._arrivals += 1
                inbound = self._inbound_by_mid.get(t.mid or "")
                if inbound is not None:
                    inbound.feed(packet.payload, packet.timestamp, packet.sequence_number)

            install_tap(receiver, route)
            install_rtcp_observer(receiver, self._arrived)
            self._observe_sender(transceiver)

    def _observe_sender(self, transceiver: RTCRtpTransceiver) -> None:
        sender = transceiver.sender
        if not getattr(sender, "_switchboard_observed", False):
            sender._switchboard_observed = True  # type: ignore[attr-defined]
            install_rtcp_observer(sender, self._arrived)

    def _arrived(self) -> None:
        self._arrivals += 1

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, name: str, source: OpusSource) -> None:
        """Publish `source` as track `name` of this session (Opus as pushed, no re-encode).

        During a recovery this waits for it: the recovery pushes every publication."""
        if name in self._published:
            raise ValueError(f"track {name!r} is already published")
        publication = _Publication(name, source)
        self._published[name] = publication
        try:
            await self._until_available()
            if publication.transceiver is not None:
                return  # pushed by the recovery we waited for
            failures = await self._negotiate(lambda: self._push([publication]))
        except PeerUnavailable:
            await self._until_available()
            if publication.transceiver is None:
                self._published.pop(name, None)
                raise
            return
        except BaseException:
            self._published.pop(name, None)
            raise
        if name in failures:
            self._published.pop(name, None)
            raise failures[name]

    async def _push(self, publications: Sequence[_Publication]) -> dict[str, RealtimeError]:
        """Push `publications`; returns the item errors by track name."""
        assert self._pc is not None
        async with self._client.negotiation(self._session_id):
            for publication in publications:
                if self._reusable:
                    transceiver = self._reusable.pop(0)
                    replace_track(transceiver.sender, publication.source.track())
                    transceiver.direction = "sendonly"
                    self._rejected.discard(transceiver.mid or "")
                else:
                    transceiver = self._pc.addTransceiver(
                        publication.source.track(), direction="sendonly"
                    )
                    self._observe_sender(transceiver)
                publication.transceiver = transceiver
            offer = await self._local_offer()
            result = await self._client.new_tracks(
                self._session_id,
                [TrackRequest.push(p.name, _mid(p)) for p in publications],
                offer,
            )
            await self._apply_answer(result.session_description)
        failures: dict[str, RealtimeError] = {}
        for publication, item in zip(
            publications, _padded(result.tracks, len(publications)), strict=False
        ):
            if item is not None and item.error is not None:
                failures[publication.name] = item.error
                continue
            logger.info(
                "published session_id=%s track=%s mid=%s",
                self._session_id,
                publication.name,
                _mid(publication),
            )
        return failures

    async def unpublish(self, name: str) -> None:
        publication = self._published.pop(name, None)
        if publication is None or publication.transceiver is None:
            return
        transceiver = publication.transceiver

        async def close() -> None:
            assert self._pc is not None
            replace_track(transceiver.sender, IdleTrack())
            transceiver.direction = "inactive"
            async with self._client.negotiation(self._session_id):
                offer = await self._local_offer()
                result = await self._client.close_tracks(
                    self._session_id, [transceiver.mid or ""], offer
                )
                await self._apply_answer(result.session_description)
            # Reused by the next publish, never stopped (docs/webrtc-interop.md §1.4).
            self._reusable.append(transceiver)

        with contextlib.suppress(PeerUnavailable):  # the recovery does not push it again
            await self._negotiate(close)

    # -- subscribing -------------------------------------------------------------------------

    def inbound(self, session_id: str, track_name: str) -> InboundOpus:
        """The subscription to (publisher session, track), registered on first use. It is
        pulled by `pull()` and kept (and re-pulled once) across recoveries until
        `unsubscribe()`; the same object is returned every time."""
        locator = TrackLocator(session_id, track_name)
        inbound = self._inbounds.get(locator)
        if inbound is None:
            inbound = self._inbounds[locator] = InboundOpus(session_id, track_name)
        return inbound

    def is_live(self, inbound: InboundOpus) -> bool:
        """Pulled on the current session (packets flow once the publisher sends)."""
        return _locator(inbound) in self._mid_of

    async def pull(self, inbounds: Iterable[InboundOpus]) -> dict[InboundOpus, Exception]:
        """Pull the registered, not yet live subscriptions among `inbounds`, once, in batches
        of 64. Returns what failed and why (RealtimeItemError not_found_track_error while the
        publisher is not sending; PeerUnavailable during a recovery). A subscription is never
        pulled twice: the liveness check and the pull happen under the lock."""
        wanted = [i for i in dict.fromkeys(inbounds) if self._inbounds.get(_locator(i)) is i]
        if not any(not self.is_live(i) for i in wanted):
            return {}
        try:
            return await self._negotiate(lambda: self._pull(wanted))
        except (PeerUnavailable, RealtimeError) as exc:
            return {i: exc for i in wanted if not self.is_live(i)}

    async def _pull(self, inbounds: Sequence[InboundOpus]) -> dict[InboundOpus, Exception]:
        todo = [i for i in inbounds if not self.is_live(i) and self._inbounds.get(_locator(i)) is i]
        if not todo:
            return {}
        result = await self._client.new_tracks(
            self._session_id,
            [TrackRequest.pull(_locator(i)) for i in todo],
            on_offer=self._answer_sfu_offer,
        )
        failures: dict[InboundOpus, Exception] = {}
        waiting = {_locator(i): i for i in todo}
        for track in result.tracks:
            inbound = _take(waiting, track)
            if inbound is None:
                continue
            if track.error is not None or not track.mid:
                failures[inbound] = track.error or RealtimeError("the SFU gave the pull no mid")
                continue
            self._mid_of[_locator(inbound)] = track.mid
            self._inbound_by_mid[track.mid] = inbound
            logger.info(
                "subscribed session_id=%s track=%s/%s mid=%s",
                self._session_id,
                inbound.session_id,
                inbound.track_name,
                track.mid,
            )
        for inbound in waiting.values():
            failures[inbound] = RealtimeError("the SFU did not answer for this pull")
        return failures

    async def subscribe(self, session_id: str, track_name: str) -> InboundOpus:
        """Register and pull one track, once. Raises the pull's error (RealtimeItemError
        not_found_track_error while the publisher is not sending) and forgets it then."""
        return (await self.subscribe_many([(session_id, track_name)]))[0]

    async def subscribe_many(self, tracks: Sequence[tuple[str, str]]) -> list[InboundOpus]:
        fresh = [TrackLocator(*t) not in self._inbounds for t in tracks]
        inbounds = [self.inbound(*t) for t in tracks]
        failures = await self.pull(inbounds)
        if failures:
            for inbound, new in zip(inbounds, fresh, strict=True):
                if new:
                    self._inbounds.pop(_locator(inbound), None)
            first = next(iter(failures.values()))
            if isinstance(first, RealtimeError | PeerUnavailable):
                raise first
            raise RealtimeItemError("pull_failed", str(first))
        return inbounds

    async def unsubscribe(self, inbound: InboundOpus) -> None:
        locator = _locator(inbound)
        if self._inbounds.get(locator) is not inbound:
            return
        del self._inbounds[locator]
        inbound.close()
        mid = self._mid_of.pop(locator, None)
        if mid is None:
            return
        self._inbound_by_mid.pop(mid, None)

        async def close() -> None:
            assert self._pc is not None
            transceiver = next(t for t in self._pc.getTransceivers() if t.mid == mid)
            transceiver.direction = "inactive"
            async with self._client.negotiation(self._session_id):
                offer = await self._local_offer()
                result = await self._client.close_tracks(self._session_id, [mid], offer)
                await self._apply_answer(result.session_description)

        with contextlib.suppress(PeerUnavailable):  # the recovery does not pull it again
            await self._negotiate(close)

    # -- statistics --------------------------------------------------------------------------

    async def stats(self) -> PeerStats:
        tracks: list[TrackStats] = []
        for publication in list(self._published.values()):
            transceiver = publication.transceiver
            if transceiver is None:
                continue
            report = await transceiver.sender.getStats()
            out = next((s for s in report.values() if s.type == "outbound-rtp"), None)
            remote = next((s for s in report.values() if s.type == "remote-inbound-rtp"), None)
            tracks.append(
                TrackStats(
                    name=publication.name,
                    direction="send",
                    packets=out.packetsSent if out else 0,
                    bytes=out.bytesSent if out else 0,
                    lost=remote.packetsLost if remote else 0,
                    jitter_ms=remote.jitter / 48 if remote and remote.jitter is not None else None,
                    rtt_ms=remote.roundTripTime * 1000 if remote and remote.roundTripTime else None,
                )
            )
        for inbound in list(self._inbounds.values()):
            s: InboundStats = inbound.stats()
            tracks.append(
                TrackStats(
                    name=f"{inbound.session_id}/{inbound.track_name}",
                    direction="recv",
                    packets=s.packets,
                    bytes=s.bytes,
                    lost=s.lost,
                    jitter_ms=s.jitter_ms,
                    rtt_ms=None,
                )
            )
        return PeerStats(self._session_id, self._state, self.recoveries, tuple(tracks))


def _locator(inbound: InboundOpus) -> TrackLocator:
    return TrackLocator(inbound.session_id, inbound.track_name)


def _take(waiting: dict[TrackLocator, InboundOpus], track: TrackResult) -> InboundOpus | None:
    """The pull a result answers: by publisher session and name, or by name alone when the
    result carries no session id."""
    if track.session_id is not None:
        return waiting.pop(TrackLocator(track.session_id, track.track_name or ""), None)
    key = next((k for k in waiting if k.track_name == track.track_name), None)
    return waiting.pop(key) if key is not None else None


def _mid(publication: _Publication) -> str:
    assert publication.transceiver is not None and publication.transceiver.mid is not None
    return publication.transceiver.mid


def _padded(items: Sequence[TrackResult], count: int) -> list[TrackResult | None]:
    return [*items[:count], *([None] * (count - len(items)))]
