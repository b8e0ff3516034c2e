"""`RealtimePeer`: one Realtime session and the one `RTCPeerConnection` it owns.

It publishes pre-encoded Opus sources and subscribes to other sessions' tracks as Opus
packets (RTP tap, no decoder), one negotiation at a time. Its SDP keeps what the SFU has
agreed (payload types, extension ids, rejected m-lines), as a strict SFU requires. When the
session is gone (410) or the connection fails — aiortc has no ICE restart — it builds a new
connection and session and publishes and subscribes everything again; the `OpusSource` and
`InboundOpus` objects callers hold keep working across that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
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
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket

from .audio.handover import replace_track
from .audio.idle import IdleTrack
from .audio.inbound import InboundOpus, InboundStats
from .audio.rtptap import install_tap
from .audio.source import OpusSource
from .backoff import Backoff
from .realtime import (
    RealtimeClient,
    RealtimeError,
    RealtimeItemError,
    SessionDescription,
    SessionGone,
    TrackLocator,
    TrackRequest,
)
from .sdp_shaping import (
    NegotiatedMap,
    rejected_mids,
    set_local_description,
    shape_answer,
    shape_offer,
)

__all__ = ["PeerConfig", "PeerEvent", "PeerState", "PeerStats", "RealtimePeer", "TrackStats"]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class PeerConfig:
    ice_servers: tuple[RTCIceServer, ...] = ()
    recovery: Backoff = field(default_factory=lambda: Backoff(initial_s=0.1, max_s=5.0))


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
        self._subscribed: list[InboundOpus] = []
        self._inbound_by_mid: dict[str, InboundOpus] = {}
        self._reusable: list[RTCRtpTransceiver] = []
        self._listeners: list[Callable[[PeerEvent], None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self.recoveries = 0

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
        logger.info("peer state session_id=%s %s->%s", self._session_id, self._state.value, state.value)
        self._state = state

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self._state is PeerState.CLOSED:
            return  # an old connection being torn down
        if pc.connectionState == "connected":
            self._set_state(PeerState.CONNECTED)
            self._emit(PeerEvent.CONNECTED)
        elif pc.connectionState in ("failed", "closed"):
            logger.warning("peer connection lost session_id=%s state=%s", self._session_id, pc.connectionState)
            self._emit(PeerEvent.FAILED)
            self._start_recovery()

    # -- connection lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self._open()

    async def _open(self) -> None:
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=list(self._config.ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            )
        )
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        pc.on("track", lambda track: self._tap_new_receivers(pc))
        self._pc = pc
        self._numbering = NegotiatedMap()
        self._rejected = set()
        self._inbound_by_mid = {}
        self._reusable = []
        self._session_id = (await self._client.new_session()).session_id
        self._set_state(PeerState.CONNECTING)
        logger.info("peer session opened session_id=%s", self._session_id)

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        async with self._lock:
            self._set_state(PeerState.CLOSED)
            for inbound in self._subscribed:
                inbound.close()
            await self._close_pc()
        self._emit(PeerEvent.CLOSED)

    def _start_recovery(self) -> asyncio.Task[None]:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name=f"peer-recovery-{self._session_id}")
        return self._recovery

    async def _recover(self) -> None:
        async with self._lock:
            if self._state is PeerState.CLOSED:
                return
            self._set_state(PeerState.RECOVERING)
            old = self._session_id
            for delay in self._config.recovery.delays():
                await asyncio.sleep(delay)
                try:
                    await self._close_pc()
                    await self._open()
                    for publication in self._published.values():
                        publication.transceiver = None
                    if self._published:
                        await self._push(list(self._published.values()))
                    for inbound in self._subscribed:
                        inbound.restart()
                    if self._subscribed:
                        await self._pull(self._subscribed)
                except (RealtimeError, OSError, ValueError) as exc:
                    logger.warning("peer recovery attempt failed old_session_id=%s error=%s", old, exc)
                    continue
                self.recoveries += 1
                logger.info("peer recovered old_session_id=%s session_id=%s", old, self._session_id)
                self._emit(PeerEvent.RECOVERED)
                return

    async def _guarded(self, operation: Callable[[], object]) -> None:
        """Run a negotiation; a gone session (410) is rebuilt, and the work redone there."""
        try:
            async with self._lock:
                if self._pc is None:
                    await self._open()
                await operation()  # type: ignore[misc]
        except SessionGone:
            await self._start_recovery()

    # -- SDP -------------------------------------------------------------------------------

    def _learn(self, description: aiortc_sdp.SessionDescription) -> None:
        self._numbering.learn(description)
        self._rejected |= rejected_mids(description)

    async def _local_offer(self) -> SessionDescription:
        assert self._pc is not None

        def shape(d: aiortc_sdp.SessionDescription) -> None:
            shape_offer(d, self._numbering, self._rejected)

        return SessionDescription("offer", await set_local_description(self._pc, "offer", shape))

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
        parsed = aiortc_sdp.SessionDescription.parse(offer.sdp)
        parsed.type = "offer"
        self._learn(parsed)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))

        def shape(d: aiortc_sdp.SessionDescription) -> None:
            shape_answer(d, parsed, self._rejected)

        return SessionDescription("answer", await set_local_description(self._pc, "answer", shape))

    def _tap_new_receivers(self, pc: RTCPeerConnection) -> None:
        # Runs inside setRemoteDescription, before aiortc starts any receiver.
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if getattr(receiver, "_switchboard_tapped", False):
                continue
            receiver._switchboard_tapped = True  # type: ignore[attr-defined]

            async def route(packet: RtpPacket, arrival_ms: int, t: RTCRtpTransceiver = transceiver) -> None:
                inbound = self._inbound_by_mid.get(t.mid or "")
                if inbound is not None:
                    inbound.feed(packet.payload, packet.timestamp, packet.sequence_number)

            install_tap(receiver, route)

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, name: str, source: OpusSource) -> None:
        """Publish `source` as track `name` of this session (Opus as pushed, no re-encode)."""
        if name in self._published:
            raise ValueError(f"track {name!r} is already published")
        publication = _Publication(name, source)
        self._published[name] = publication
        try:
            await self._guarded(lambda: self._push([publication]))
        except BaseException:
            self._published.pop(name, None)
            raise

    async def _push(self, publications: Sequence[_Publication]) -> None:
        assert self._pc is not None
        async with self._client.negotiation(self._session_id):
            for publication in publications:
                if self._reusable:
                    transceiver = self._reusable.pop(0)
                    replace_track(transceiver.sender, publication.source.track())
                    transceiver.direction = "sendonly"
                    self._rejected.discard(transceiver.mid or "")
                else:
                    transceiver = self._pc.addTransceiver(publication.source.track(), direction="sendonly")
                publication.transceiver = transceiver
            offer = await self._local_offer()
            result = await self._client.new_tracks(
                self._session_id,
                [TrackRequest.push(p.name, p.transceiver.mid) for p in publications],  # type: ignore[union-attr]
                offer,
            )
            await self._apply_answer(result.session_description)
        failed = [t for t in result.tracks if t.error is not None]
        if failed:
            raise failed[0].error  # type: ignore[misc]
        for publication in publications:
            logger.info(
                "published session_id=%s track=%s mid=%s",
                self._session_id, publication.name, publication.transceiver.mid,  # type: ignore[union-attr]
            )

    async def unpublish(self, name: str) -> None:
        publication = self._published.pop(name, None)
        if publication is None or publication.transceiver is None:
            return

        async def close() -> None:
            transceiver = publication.transceiver
            assert transceiver is not None and self._pc is not None
            replace_track(transceiver.sender, IdleTrack())
            transceiver.direction = "inactive"
            async with self._client.negotiation(self._session_id):
                offer = await self._local_offer()
                result = await self._client.close_tracks(self._session_id, [transceiver.mid or ""], offer)
                await self._apply_answer(result.session_description)
            # Reused by the next publish; the m-line is never stopped (DESIGN.md §4).
            self._reusable.append(transceiver)

        await self._guarded(close)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, session_id: str, track_name: str) -> InboundOpus:
        return (await self.subscribe_many([(session_id, track_name)]))[0]

    async def subscribe_many(self, tracks: Sequence[tuple[str, str]]) -> list[InboundOpus]:
        """Subscribe to (publisher session id, track name) pairs; batches of 64 per request.

        Raises `RealtimeItemError` for a track still not available after the client's
        retries (its publisher never started sending).
        """
        inbounds = [InboundOpus(sid, name) for sid, name in tracks]
        self._subscribed.extend(inbounds)
        try:
            await self._guarded(lambda: self._pull(inbounds))
        except BaseException:
            for inbound in inbounds:
                self._subscribed.remove(inbound)
            raise
        missing = [i for i in inbounds if i not in self._inbound_by_mid.values()]
        if missing and self._state is not PeerState.RECOVERING:
            for inbound in missing:
                self._subscribed.remove(inbound)
            raise RealtimeItemError(
                "not_found_track_error",
                f"track {missing[0].track_name!r} of session {missing[0].session_id} is not available",
            )
        return inbounds

    async def _pull(self, inbounds: Sequence[InboundOpus]) -> None:
        result = await self._client.new_tracks(
            self._session_id,
            [TrackRequest.pull(TrackLocator(i.session_id, i.track_name)) for i in inbounds],
            on_offer=self._answer_sfu_offer,
        )
        waiting = {(i.session_id, i.track_name): i for i in inbounds}
        for track in result.tracks:
            inbound = waiting.pop((track.session_id or "", track.track_name or ""), None)
            if inbound is None or track.error is not None or not track.mid:
                if track.error is not None:
                    logger.warning(
                        "pull failed session_id=%s track=%s/%s error_code=%s",
                        self._session_id, track.session_id, track.track_name, track.error.error_code,
                    )
                continue
            self._inbound_by_mid[track.mid] = inbound
            logger.info(
                "subscribed session_id=%s track=%s/%s mid=%s",
                self._session_id, inbound.session_id, inbound.track_name, track.mid,
            )

    async def unsubscribe(self, inbound: InboundOpus) -> None:
        inbound.close()
        if inbound in self._subscribed:
            self._subscribed.remove(inbound)
        mid = next((m for m, i in self._inbound_by_mid.items() if i is inbound), None)
        if mid is None:
            return

        async def close() -> None:
            assert self._pc is not None
            del self._inbound_by_mid[mid]
            transceiver = next(t for t in self._pc.getTransceivers() if t.mid == mid)
            transceiver.direction = "inactive"
            async with self._client.negotiation(self._session_id):
                offer = await self._local_offer()
                result = await self._client.close_tracks(self._session_id, [mid], offer)
                await self._apply_answer(result.session_description)

        await self._guarded(close)

    # -- statistics --------------------------------------------------------------------------

    async def stats(self) -> PeerStats:
        tracks: list[TrackStats] = []
        for publication in self._published.values():
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
        for inbound in self._subscribed:
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
