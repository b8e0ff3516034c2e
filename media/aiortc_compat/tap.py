"""A tap on an aiortc `RTCRtpReceiver`: RTP packets go to our code, not to a decoder.

aiortc has no public way to receive encoded media. Its stock path (jitter buffer with a
prefetch of 4, then a decoder thread per receiver) adds ~80 ms and, after one lost packet,
~300 ms (aiortc#543). The router looks `_handle_rtp_packet` up on each receiver instance for
every packet, so replacing it per instance hands us parsed `RtpPacket`s at ~100 µs each.
`receive()` is replaced as well so that no decoder thread is ever started.

This is the only module that touches aiortc receiver internals; both the local SFU and the
media peer go through it. RTCP is observed the same way, for the peer's watchdog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import AnyRtcpPacket, RtpPacket

__all__ = ["RtpHandler", "install_rtcp_observer", "install_tap"]

OPUS_CLOCK_RATE_HZ = 48000

RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]
"""Called with each RTP packet routed to the receiver and its arrival time in ms."""


def install_tap(receiver: RTCRtpReceiver, handler: RtpHandler) -> None:
    """Route `receiver`'s RTP packets to `handler`; must be called before it starts."""

    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        # The statistics aiortc's own path keeps: its RTCP loop sends receiver reports from
        # them, which tell the sender (an SFU, a peer's watchdog) that the path is alive.
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(OPUS_CLOCK_RATE_HZ)
        stats.add(packet)
        await handler(packet, arrival_time_ms)

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        # Mirrors RTCRtpReceiver.receive() minus the decoder thread.
        if receiver._RTCRtpReceiver__started:  # type: ignore[attr-defined]
            return
        codecs = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        for codec in parameters.codecs:
            codecs[codec.payloadType] = codec
        receiver.transport._register_rtp_receiver(receiver, parameters)
        receiver._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(  # type: ignore[attr-defined]
            receiver._run_rtcp()
        )
        receiver._RTCRtpReceiver__started = True  # type: ignore[attr-defined]

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]


def install_rtcp_observer(
    endpoint: RTCRtpReceiver | RTCRtpSender, observe: Callable[[], None]
) -> None:
    """Call `observe()` for each RTCP packet routed to `endpoint` (a sender gets the remote's
    receiver reports, a receiver its sender reports): proof that the path is alive even when
    no media flows. The router looks `_handle_rtcp_packet` up per instance, as for RTP."""
    handle = endpoint._handle_rtcp_packet

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        observe()
        await handle(packet)

    endpoint._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
