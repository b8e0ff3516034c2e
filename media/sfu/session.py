"""One SFU session: a client's RTCPeerConnection plus the tracks it publishes and pulls.

The tracks and channels belong to the session, the connection does not: when a browser moves
to a new transport (its BUNDLE tag changes), the session moves to a new connection with them.

Every request on a session runs under its lock, so negotiations never overlap; a request that
needs a new negotiation while the SFU's own offer is still unanswered gets 406, as Cloudflare
answers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket

from ..aiortc_compat import (
    data_channel_ids,
    dtls_role,
    enlarge_receive_buffers,
    inherit_seen_mids,
    install_tap,
    mline_index,
    negotiated_codecs,
    negotiated_extensions,
    transceiver_list,
)
from ..audio.idle import IdleTrack
from ..sdp_shaping import (
    NegotiatedMap,
    rejected_mids,
    set_local_description,
    shape_answer,
    shape_offer,
)
from . import sdp
from .datachannels import (
    MAX_CHANNELS_PER_SESSION,
    ChannelIds,
    ChannelIdsExhausted,
    ChannelPublication,
    ChannelResult,
    ChannelStatus,
    channel_status,
)
from .errors import NOT_FOUND_TRACK_ERROR, ApiError, ItemError
from .forwarder import ExtensionIds, Publication, Subscription
from .models import DataChannelItem, SessionDescription, TrackItem
from .sdp import ClientSdp

__all__ = ["SessionState", "SfuSession", "TrackResult", "TrackStatus"]

logger = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0
SERVER_EVENTS = "server-events"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class SessionState(Enum):
    NEW = "new"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class TrackResult:
    track_name: str | None
    mid: str
    session_id: str | None = None
    error: ItemError | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mid": self.mid}
        if self.track_name is not None:
            out["trackName"] = self.track_name
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        if self.error is not None:
            out.update(self.error.to_json())
        return out


@dataclass(frozen=True, slots=True)
class TrackStatus:
    location: str
    mid: str
    track_name: str
    status: str
    session_id: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "location": self.location,
            "mid": self.mid,
            "trackName": self.track_name,
            "status": self.status,
        }
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        return out


@dataclass(slots=True)
class _Pulled:
    transceiver: RTCRtpTransceiver
    subscription: Subscription
    mid: str | None = None


@dataclass(slots=True)
class _Negotiation:
    """What the SFU's pending offer will activate once the client answers."""

    pulls: list[_Pulled] = field(default_factory=list)


class Directory(Protocol):
    """Where a session finds and announces publications (the registry)."""

    def lookup(self, session_id: str, track_name: str) -> Publication | None: ...
    def published(self, publication: Publication) -> None: ...
    def unpublished(self, publication: Publication) -> None: ...
    def lookup_channel(self, session_id: str, name: str) -> ChannelPublication | None: ...
    def channel_published(self, publication: ChannelPublication) -> None: ...
    def channel_unpublished(self, publication: ChannelPublication) -> None: ...


def _new_connection() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def _bundle_tag(description: aiortc_sdp.SessionDescription) -> str | None:
    bundle = next((g for g in description.group if g.semantic == "BUNDLE"), None)
    return str(bundle.items[0]) if bundle and bundle.items else None


class SfuSession:
    def __init__(self, session_id: str, directory: Directory) -> None:
        self.id = session_id
        self.pc = _new_connection()
        self.lock = asyncio.Lock()
        self.state = SessionState.NEW
        self.disconnected_at: float | None = None
        self._directory = directory
        self._channels: dict[
            int, tuple[RTCDataChannel, ChannelStatus, ChannelPublication | None]
        ] = {}
        self._server_events: RTCDataChannel | None = None
        self._connected = asyncio.Event()
        self._negotiated_once = False
        self._numbering = NegotiatedMap()
        self._closed_mids: set[str] = set()
        # Mids the client rejected (port 0); the SFU's own offers keep them rejected. A mid the
        # client merely made inactive stays open on both sides (docs/webrtc-interop.md §2.3).
        self._rejected: set[str] = set()
        self._bundle_tag: str | None = None
        """The first mid of the BUNDLE group of the last answer: the transport in force."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._published: dict[str, Publication] = {}  # by mid
        self._pulled: dict[str, _Pulled] = {}  # by mid
        self._pending: _Negotiation | None = None
        self._channel_ids = ChannelIds()
        self._tapped: weakref.WeakSet[object] = weakref.WeakSet()
        self._ended_tracks: list[TrackStatus] = []
        self.pc.on("connectionstatechange", self._on_connection_state)

    # -- state -------------------------------------------------------------------------

    def _set_state(self, state: SessionState) -> None:
        if state is self.state:
            return
        logger.info("session state session_id=%s %s->%s", self.id, self.state.value, state.value)
        self.state = state
        if state is SessionState.CONNECTED:
            self.disconnected_at = None
            self._connected.set()
        else:
            self._connected.clear()
            if state is SessionState.DISCONNECTED:
                self.disconnected_at = time.monotonic()

    def _on_connection_state(self) -> None:
        pc_state = self.pc.connectionState
        if pc_state == "connected":
            self._set_state(SessionState.CONNECTED)
            self._connected.set()  # also after a transport move, when the state stayed CONNECTED
        elif pc_state in ("failed", "closed") and self.state is not SessionState.CLOSED:
            self._set_state(SessionState.DISCONNECTED)

    @property
    def publications(self) -> tuple[Publication, ...]:
        return tuple(self._published.values())

    async def close(self) -> None:
        if self.state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        for publication in self._published.values():
            publication.close()
            self._directory.unpublished(publication)
        for pulled in self._pulled.values():
            pulled.subscription.close()
        if self._pending is not None:
            for pulled in self._pending.pulls:
                pulled.subscription.close()
        for _, _, channel_publication in self._channels.values():
            if channel_publication is not None:
                channel_publication.close()
                self._directory.channel_unpublished(channel_publication)
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.pc.close()

    async def _require_connected(self) -> None:
        if not self._negotiated_once or self._connected.is_set():
            return
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            raise ApiError.not_connected(self.id) from None

    def _require_stable(self) -> None:
        if self.pc.signalingState != "stable":
            raise ApiError.invalid_sdp(
                "a negotiation is in progress on this session: answer the pending offer with "
                "PUT renegotiate before starting another"
            )

    # -- negotiation helpers -------------------------------------------------------------

    def _tap_receivers(self) -> None:
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if receiver in self._tapped:
                continue
            self._tapped.add(receiver)

            async def route(
                packet: RtpPacket, arrival_ms: int, t: RTCRtpTransceiver = transceiver
            ) -> None:
                publication = self._published.get(t.mid) if t.mid is not None else None
                if publication is not None:
                    await publication.on_rtp(packet, arrival_ms)

            install_tap(receiver, route)

    async def _drop_stale_transceivers(self, offer: aiortc_sdp.SessionDescription) -> None:
        # A browser may recycle a closed m-line for a new mid; aiortc then keeps two
        # transceivers on one m-line and would pick the stale one (docs/webrtc-interop.md §2.5).
        transceivers = transceiver_list(self.pc)
        stale = [
            t
            for index, media in enumerate(offer.media)
            for t in transceivers
            if mline_index(t) == index and t.mid != media.rtp.muxId
        ]
        for t in stale:
            transceivers.remove(t)
        # After the removal: stopping yields to the loop, and nothing may find them meanwhile.
        for t in stale:
            await t.stop()

    def _moves_transport(self, offer: aiortc_sdp.SessionDescription) -> bool:
        """A browser builds a new transport when the first mid of its BUNDLE group changes
        (docs/webrtc-interop.md §2.3): its tag m-line was rejected, or a recycled slot now
        comes first. Only that moves it; an m-line merely made inactive keeps the transport."""
        tag = _bundle_tag(offer)
        return self._bundle_tag is not None and tag is not None and tag != self._bundle_tag

    def _check_continuity(self, offer: aiortc_sdp.SessionDescription) -> None:
        """JSEP never removes or reorders m-lines: a later offer keeps each one's place and
        kind, and may give a new mid only to a slot that was rejected (a browser recycles it)."""
        current = self.pc.remoteDescription or self.pc.localDescription
        if current is None:
            return
        before = aiortc_sdp.SessionDescription.parse(current.sdp).media
        for index, old in enumerate(before):
            new = offer.media[index] if index < len(offer.media) else None
            recyclable = old.port == 0 or old.rtp.muxId in self._closed_mids
            if (
                new is None
                or new.kind != old.kind
                or (new.rtp.muxId != old.rtp.muxId and not recyclable)
            ):
                raise ApiError.invalid_sdp(
                    f"the offer must keep m-line {index} ({old.kind}, mid {old.rtp.muxId}) in its "
                    "place: reject it with port 0 instead of removing or reordering it"
                )

    # -- transport move -----------------------------------------------------------------

    async def _move(self, client: ClientSdp) -> None:
        """Follow the client to its new transport: a fresh peer connection takes the offer.

        The same aiortc connection cannot follow (its DTLS transport closes and cannot
        restart); a fresh one can, since the moved transport has no remote parameters yet and
        accepts the new ICE and DTLS ones of the answer (docs/webrtc-interop.md §2.3).
        Publications and subscriptions belong to the session, not to the connection: the new
        receivers are tapped into the same publications by mid, each subscription takes over
        the new sender under its old SSRC, so the client's streams go on, and datachannels are
        opened again.
        """
        offer = client.description
        pc = _new_connection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=client.text, type="offer"))
        except Exception as exc:
            await pc.close()
            raise ApiError.invalid_sdp(f"offer rejected: {exc}") from None
        old, self.pc = self.pc, pc
        # The new connection must never hand out a mid the client has seen on this session.
        inherit_seen_mids(pc, old)
        # Before the client's close_notify reaches the old connection: its end is no news.
        old.remove_listener("connectionstatechange", self._on_connection_state)
        pc.on("connectionstatechange", self._on_connection_state)
        self._connected.clear()
        before = {t.mid: t for t in old.getTransceivers() if t.mid is not None}
        for transceiver in pc.getTransceivers():
            previous = before.get(transceiver.mid) if transceiver.mid is not None else None
            if previous is None:
                continue
            transceiver.direction = previous.direction
            if previous.sender.track is not None:
                transceiver.sender.replaceTrack(IdleTrack())
        by_mid = {t.mid: t for t in pc.getTransceivers()}
        for mid, pulled in self._pulled.items():
            pulled.transceiver = by_mid[mid]  # JSEP keeps every m-line (_check_continuity)
            pulled.subscription.move_to(pulled.transceiver.sender)
            self._configure(pulled)
        self._move_channels(pc)
        task = asyncio.create_task(self._retire(old), name=f"sfu-retire-{self.id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        logger.info(
            "session follows a transport move session_id=%s bundle_tag=%s->%s publications=%d "
            "subscriptions=%d",
            self.id,
            self._bundle_tag,
            _bundle_tag(offer),
            len(self._published),
            len(self._pulled),
        )

    def _move_channels(self, pc: RTCPeerConnection) -> None:
        """Open every channel of the session again on the new connection.

        The browser restarts its SCTP association on the moved transport and its channels
        stay open; the new connection's association starts afresh, so the SFU's side of each
        negotiated channel is created again with its id, and the relays follow.
        """
        for channel_id, (channel, status, publication) in list(self._channels.items()):
            moved = pc.createDataChannel(channel.label, negotiated=True, id=channel_id)
            if publication is not None:
                publication.move_to(moved)
            elif status.session_id is not None:
                source = self._directory.lookup_channel(status.session_id, status.name)
                if source is not None:
                    source.resubscribe(channel, moved)
            if channel is self._server_events:
                self._server_events = moved
            self._channels[channel_id] = (moved, status, publication)

    async def _retire(self, old: RTCPeerConnection) -> None:
        try:
            # Closing a connection keeps the loop busy; let the new one finish its ICE and
            # DTLS handshake first, since that handshake is the client's gap in the audio.
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            pass
        finally:
            await old.close()

    async def _apply_client_offer(
        self, description: SessionDescription
    ) -> aiortc_sdp.SessionDescription:
        if description.type != "offer":
            raise ApiError.invalid_sdp("sessionDescription must be an offer here")
        self._require_stable()
        client = sdp.parse(description.sdp, "offer")
        offer = client.description
        self._check_continuity(offer)
        if self._moves_transport(offer):
            await self._move(client)
        else:
            try:
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=client.text, type="offer")
                )
            except Exception as exc:
                raise ApiError.invalid_sdp(f"offer rejected: {exc}") from None
        self._rejected |= rejected_mids(offer)
        self._numbering.learn(offer)
        await self._drop_stale_transceivers(offer)
        self._tap_receivers()
        return offer

    async def _answer(self, offer: aiortc_sdp.SessionDescription) -> SessionDescription:
        def shape(d: aiortc_sdp.SessionDescription) -> None:
            # Only what the offer rejected: rejecting an m-line the client keeps open (a closed
            # track it made inactive) would move a browser's transport if it is the BUNDLE tag.
            shape_answer(d, offer, ())

        try:
            answer = await set_local_description(self.pc, "answer", shape)
        except Exception as exc:
            # aiortc accepted the offer but cannot answer it, and it has no rollback: the
            # connection is unusable, so the session ends here rather than wedge.
            logger.warning("cannot answer offer session_id=%s error=%r", self.id, exc)
            await self.close()
            raise ApiError.invalid_sdp(
                f"the offer cannot be answered ({exc!r}); this session is closed, create a new one"
            ) from None
        self._negotiated_once = True
        self._bundle_tag = _bundle_tag(aiortc_sdp.SessionDescription.parse(answer))
        enlarge_receive_buffers(self.pc)
        return SessionDescription(type="answer", sdp=answer)

    async def _offer(self) -> SessionDescription:
        def shape(d: aiortc_sdp.SessionDescription) -> None:
            shape_offer(d, self._numbering, self._rejected)

        offer = await set_local_description(self.pc, "offer", shape)
        enlarge_receive_buffers(self.pc)
        return SessionDescription(type="offer", sdp=offer)

    def _configure(self, pulled: _Pulled) -> None:
        transceiver = pulled.transceiver
        opus = next(
            (
                c.payloadType
                for c in negotiated_codecs(transceiver)
                if c.mimeType.lower() == "audio/opus"
            ),
            None,
        )
        if opus is None:
            logger.warning("pull without opus session_id=%s mid=%s", self.id, transceiver.mid)
            return
        ids = {e.uri: e.id for e in negotiated_extensions(transceiver)}
        pulled.subscription.configure(
            opus,
            ExtensionIds(mid=ids.get(MID_URI, 0), audio_level=ids.get(AUDIO_LEVEL_URI, 0)),
            transceiver.mid,
        )

    def _ensure_placeholder(self) -> None:
        # When the SFU offers first, its first m-line is the BUNDLE tag; closing it would move
        # the browser to a new transport, so it is an inactive placeholder never closed.
        if not self.pc.getTransceivers() and self.pc.remoteDescription is None:
            self.pc.addTransceiver("audio", direction="inactive")

    # -- operations ----------------------------------------------------------------------

    async def accept_offer(self, description: SessionDescription) -> SessionDescription:
        """sessions/new with an offer: answer it, publishing nothing yet."""
        offer = await self._apply_client_offer(description)
        return await self._answer(offer)

    async def new_tracks(
        self,
        items: Sequence[TrackItem],
        description: SessionDescription | None,
        auto_discover: bool,
    ) -> tuple[list[TrackResult], SessionDescription | None, bool]:
        await self._require_connected()
        if description is not None:
            return await self._tracks_with_offer(items, description, auto_discover)
        return await self._tracks_by_sfu_offer(items)

    def _publish(self, transceiver: RTCRtpTransceiver, track_name: str) -> TrackResult:
        mid = transceiver.mid or ""
        if any(p.track_name == track_name and p.is_active for p in self._published.values()):
            return TrackResult(
                track_name,
                mid,
                error=ItemError("invalid_params", f"track {track_name!r} is already published"),
            )
        publication = Publication(self.id, track_name, mid)
        self._published[mid] = publication
        self._directory.published(publication)
        logger.info("published session_id=%s track=%s mid=%s", self.id, track_name, mid)
        return TrackResult(track_name, mid)

    def _pull_item_error(self, item: TrackItem) -> TrackResult | None:
        if not item.session_id or not item.track_name:
            return TrackResult(
                item.track_name,
                "",
                item.session_id,
                ItemError("invalid_params", "a remote track needs sessionId and trackName"),
            )
        publication = self._directory.lookup(item.session_id, item.track_name)
        if publication is None or not publication.is_sending:
            return TrackResult(
                item.track_name,
                "",
                item.session_id,
                ItemError(
                    NOT_FOUND_TRACK_ERROR,
                    f"track {item.track_name!r} of session {item.session_id} is not published or "
                    "is not sending yet",
                ),
            )
        return None

    def _subscribe(self, transceiver: RTCRtpTransceiver, item: TrackItem) -> _Pulled:
        assert item.session_id and item.track_name
        publication = self._directory.lookup(item.session_id, item.track_name)
        assert publication is not None
        if transceiver.sender.track is None:
            transceiver.sender.replaceTrack(IdleTrack())
        subscription = Subscription(publication, transceiver.sender, self.id)
        publication.attach(subscription)
        return _Pulled(transceiver=transceiver, subscription=subscription, mid=transceiver.mid)

    async def _tracks_with_offer(
        self, items: Sequence[TrackItem], description: SessionDescription, auto_discover: bool
    ) -> tuple[list[TrackResult], SessionDescription, bool]:
        offer = await self._apply_client_offer(description)
        by_mid = {t.mid: t for t in self.pc.getTransceivers() if t.mid is not None}
        offered = {m.rtp.muxId: m for m in offer.media}
        results: list[TrackResult] = []
        pulls: list[_Pulled] = []
        named = set()
        for item in items:
            mid = item.mid or ""
            transceiver = by_mid.get(mid)
            media = offered.get(mid)
            if transceiver is None or media is None or media.port == 0:
                results.append(
                    TrackResult(
                        item.track_name,
                        mid,
                        item.session_id,
                        ItemError(
                            "invalid_params", f"mid {mid!r} is not an open m-line of the offer"
                        ),
                    )
                )
                continue
            if item.location == "local":
                if media.direction not in ("sendonly", "sendrecv") or not item.track_name:
                    results.append(
                        TrackResult(
                            item.track_name,
                            mid,
                            error=ItemError(
                                "invalid_params",
                                f"mid {mid} does not send, or trackName is missing",
                            ),
                        )
                    )
                    continue
                named.add(mid)
                # A client may reuse the transceiver of a closed track for a new one.
                self._closed_mids.discard(mid)
                results.append(self._publish(transceiver, item.track_name))
            else:
                error = self._pull_item_error(item)
                if error is not None:
                    results.append(error)
                    continue
                transceiver.direction = "sendrecv" if media.direction == "sendrecv" else "sendonly"
                pulled = self._subscribe(transceiver, item)
                pulls.append(pulled)
                results.append(TrackResult(item.track_name, mid, item.session_id))
        if auto_discover:
            for media in offer.media:
                mid = media.rtp.muxId
                if (
                    media.kind == "audio"
                    and media.port != 0
                    and media.direction in ("sendonly", "sendrecv")
                    and mid not in self._published
                    and mid not in named
                ):
                    track_name = offer.webrtc_track_id(media) or mid
                    results.append(self._publish(by_mid[mid], track_name))
        answer = await self._answer(offer)
        for pulled in pulls:
            pulled.mid = pulled.transceiver.mid
            self._pulled[pulled.mid or ""] = pulled
            self._configure(pulled)
        return results, answer, False

    async def _tracks_by_sfu_offer(
        self, items: Sequence[TrackItem]
    ) -> tuple[list[TrackResult], SessionDescription | None, bool]:
        self._require_stable()
        results: list[TrackResult | _Pulled | tuple[RTCRtpTransceiver, str]] = []
        pulls: list[_Pulled] = []
        for item in items:
            if item.location == "local":
                if not item.track_name:
                    results.append(
                        TrackResult(
                            None, "", error=ItemError("invalid_params", "trackName is required")
                        )
                    )
                    continue
                self._ensure_placeholder()
                transceiver = self.pc.addTransceiver("audio", direction="recvonly")
                results.append((transceiver, item.track_name))
                continue
            error = self._pull_item_error(item)
            if error is not None:
                results.append(error)
                continue
            if item.mid and item.mid.startswith("#"):
                reused = self._bidirectional_transceiver(item.mid[1:])
                if reused is None:
                    results.append(
                        TrackResult(
                            item.track_name,
                            "",
                            item.session_id,
                            ItemError(
                                "invalid_params",
                                f"no local track {item.mid[1:]!r} on this session to reuse",
                            ),
                        )
                    )
                    continue
                transceiver = reused
                transceiver.direction = "sendrecv"
            else:
                self._ensure_placeholder()
                transceiver = self.pc.addTransceiver(IdleTrack(), direction="sendonly")
            pulled = self._subscribe(transceiver, item)
            pulls.append(pulled)
            results.append(pulled)
        if not pulls and not any(isinstance(r, tuple) for r in results):
            return [r for r in results if isinstance(r, TrackResult)], None, False
        offer = await self._offer()
        self._tap_receivers()
        self._pending = _Negotiation(pulls=pulls)
        final: list[TrackResult] = []
        for result in results:
            if isinstance(result, TrackResult):
                final.append(result)
            elif isinstance(result, _Pulled):
                result.mid = result.transceiver.mid
                final.append(
                    TrackResult(
                        result.subscription.publication.track_name,
                        result.mid or "",
                        result.subscription.publication.session_id,
                    )
                )
            else:
                transceiver, name = result
                final.append(self._publish(transceiver, name))
        return final, offer, True

    def _bidirectional_transceiver(self, track_name: str) -> RTCRtpTransceiver | None:
        for mid, publication in self._published.items():
            if publication.track_name == track_name:
                return next((t for t in self.pc.getTransceivers() if t.mid == mid), None)
        return None

    async def renegotiate(self, description: SessionDescription) -> None:
        if description.type != "answer":
            raise ApiError.invalid_sdp("renegotiate takes the answer to the SFU's offer")
        if self.pc.signalingState != "have-local-offer" or self.pc.localDescription is None:
            raise ApiError.invalid_sdp("there is no pending offer on this session to answer")
        client = sdp.parse(description.sdp, "answer")
        answer = client.description
        offer = aiortc_sdp.SessionDescription.parse(self.pc.localDescription.sdp)
        if [(m.kind, m.rtp.muxId) for m in answer.media] != [
            (m.kind, m.rtp.muxId) for m in offer.media
        ]:
            # aiortc would raise and stay in have-local-offer; refuse before touching it.
            raise ApiError.invalid_sdp("the answer's media sections do not match the offer's")
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=client.text, type="answer")
            )
        except Exception as exc:
            raise ApiError.invalid_sdp(f"answer rejected: {exc}") from None
        self._numbering.learn(answer)
        self._rejected |= rejected_mids(answer)
        self._bundle_tag = _bundle_tag(answer)
        self._negotiated_once = True
        pending, self._pending = self._pending, None
        for pulled in pending.pulls if pending else []:
            if pulled.subscription.active:
                self._pulled[pulled.mid or ""] = pulled
                self._configure(pulled)

    async def close_tracks(
        self, mids: Sequence[str], description: SessionDescription | None, force: bool
    ) -> tuple[list[TrackResult], SessionDescription | None]:
        if description is None and not force:
            raise ApiError.invalid_params(
                "closing tracks needs the client's offer in sessionDescription, or force: true"
            )
        if not force:  # a forced close exchanges no SDP: the connection may be gone for good
            await self._require_connected()
        pending = self._pending.pulls if self._pending else []
        negotiating = {p.mid: p for p in pending if p.mid in mids}
        if negotiating and not force:
            raise ApiError.invalid_params(
                "a track in mids is still being negotiated: answer the SFU's offer first"
            )
        results = []
        for mid in mids:
            cancelled = negotiating.get(mid)
            if cancelled is not None:  # forced: cancelled, so it never becomes active
                pending.remove(cancelled)
                cancelled.subscription.close()
                results.append(TrackResult(cancelled.subscription.publication.track_name, mid))
                continue
            publication = self._published.get(mid)
            pulled = self._pulled.pop(mid, None)
            if publication is not None and publication.state.value == "active":
                publication.close()
                self._directory.unpublished(publication)
                results.append(TrackResult(publication.track_name, mid))
            elif pulled is not None:
                pulled.subscription.close()
                pulled.transceiver.direction = "inactive"
                self._ended_tracks.append(
                    TrackStatus(
                        "remote",
                        mid,
                        pulled.subscription.publication.track_name,
                        "inactive",
                        pulled.subscription.publication.session_id,
                    )
                )
                results.append(TrackResult(pulled.subscription.publication.track_name, mid))
            else:
                results.append(
                    TrackResult(
                        None,
                        mid,
                        error=ItemError(
                            "close_track_error", f"no open track with mid {mid!r} on this session"
                        ),
                    )
                )
                continue
            self._closed_mids.add(mid)
        answer = None
        if description is not None:
            offer = await self._apply_client_offer(description)
            answer = await self._answer(offer)
        return results, answer

    def track_statuses(self) -> list[TrackStatus]:
        statuses = [
            TrackStatus("local", mid, p.track_name, p.state.value)
            for mid, p in self._published.items()
        ]
        for mid, pulled in self._pulled.items():
            publication = pulled.subscription.publication
            active = pulled.subscription.active and publication.state.value == "active"
            statuses.append(
                TrackStatus(
                    "remote",
                    mid,
                    publication.track_name,
                    "active" if active else "inactive",
                    publication.session_id,
                )
            )
        statuses.extend(self._ended_tracks)
        return statuses

    # -- datachannels ----------------------------------------------------------------------

    async def establish_datachannels(
        self, description: SessionDescription | None
    ) -> tuple[ChannelResult, SessionDescription | None, bool]:
        """Set up SCTP and pull the SFU's `server-events` channel (as Cloudflare does)."""
        await self._require_connected()
        answer: SessionDescription | None = None
        offer: SessionDescription | None = None
        if description is not None:
            if "m=application" not in description.sdp:
                raise ApiError.invalid_sdp(
                    "datachannels/establish with an offer needs an m=application section in it"
                )
            parsed = await self._apply_client_offer(description)
            answer = await self._answer(parsed)
        if self.pc.sctp is None:
            self._require_stable()
            # createDataChannel makes aiortc add the m=application section to its next offer.
            self._server_events = self.pc.createDataChannel(SERVER_EVENTS, negotiated=True, id=1)
            offer = await self._offer()
            self._pending = _Negotiation()
        channel = self._server_events
        if channel is None:
            channel_id = self._allocate_channel_id()
            channel = self.pc.createDataChannel(SERVER_EVENTS, negotiated=True, id=channel_id)
            self._server_events = channel
        assert channel.id is not None
        self._channels[channel.id] = (
            channel,
            ChannelStatus("remote", SERVER_EVENTS, channel.id, ""),
            None,
        )
        result = ChannelResult("remote", SERVER_EVENTS, channel_id=channel.id)
        return result, answer or offer, offer is not None

    def _allocate_channel_id(self) -> int:
        # Before the DTLS role is settled the SFU is the offerer, and answerers pick client.
        assert self.pc.sctp is not None
        sctp = self.pc.sctp
        try:
            return self._channel_ids.allocate(
                dtls_role(sctp), lambda i: i in self._channels or i in data_channel_ids(sctp)
            )
        except ChannelIdsExhausted as exc:
            raise ApiError.invalid_params(str(exc)) from None

    async def new_datachannels(self, items: Sequence[DataChannelItem]) -> list[ChannelResult]:
        await self._require_connected()
        if self.pc.sctp is None:
            raise ApiError.invalid_params(
                "no datachannel transport: call datachannels/establish with an offer first"
            )
        if len(self._channels) + len(items) > MAX_CHANNELS_PER_SESSION:
            raise ApiError.invalid_params(
                f"a session keeps at most {MAX_CHANNELS_PER_SESSION} datachannels; close some first"
            )
        results = []
        for item in items:
            if item.location == "local":
                if self._directory.lookup_channel(self.id, item.name) is not None:
                    results.append(
                        ChannelResult(
                            "local",
                            item.name,
                            error=ItemError(
                                "invalid_params", f"datachannel {item.name!r} is already published"
                            ),
                        )
                    )
                    continue
                channel_id = self._allocate_channel_id()
                channel = self.pc.createDataChannel(item.name, negotiated=True, id=channel_id)
                publication = ChannelPublication(self.id, item.name, channel)
                self._directory.channel_published(publication)
                self._channels[channel_id] = (
                    channel,
                    ChannelStatus("local", item.name, channel_id, ""),
                    publication,
                )
                results.append(ChannelResult("local", item.name, channel_id=channel_id))
                continue
            source = self._directory.lookup_channel(item.session_id or "", item.name)
            if source is None:
                results.append(
                    ChannelResult(
                        "remote",
                        item.name,
                        item.session_id,
                        error=ItemError(
                            "not_found_datachannel_error",
                            f"datachannel {item.name!r} of session {item.session_id} "
                            "is not published",
                        ),
                    )
                )
                continue
            channel_id = self._allocate_channel_id()
            channel = self.pc.createDataChannel(item.name, negotiated=True, id=channel_id)
            source.subscribers.append(channel)
            self._channels[channel_id] = (
                channel,
                ChannelStatus("remote", item.name, channel_id, "", item.session_id),
                None,
            )
            results.append(ChannelResult("remote", item.name, item.session_id, channel_id))
        return results

    def close_datachannels(self, ids: Sequence[int]) -> list[ChannelResult]:
        results = []
        for channel_id in ids:
            entry = self._channels.pop(channel_id, None)
            if entry is None:
                results.append(
                    ChannelResult(
                        "local",
                        "",
                        channel_id=channel_id,
                        error=ItemError(
                            "close_datachannel_error",
                            f"no datachannel with id {channel_id} on this session",
                        ),
                    )
                )
                continue
            channel, status, publication = entry
            if publication is not None:
                publication.close()
                self._directory.channel_unpublished(publication)
            else:
                channel.close()
            results.append(
                ChannelResult(status.location, status.name, status.session_id, channel_id)
            )
        return results

    def datachannel_statuses(self) -> list[ChannelStatus]:
        return [
            replace(status, status=channel_status(channel))
            for channel, status, _ in self._channels.values()
        ]
