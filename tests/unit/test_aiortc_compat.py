"""The aiortc and aioice internals `media.aiortc_compat` relies on are still where it expects
them. An upgrade that moves one fails here, naming the attribute, instead of as silence in a
call."""

from __future__ import annotations

import importlib.metadata
import inspect

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcrtpreceiver import StreamStatistics

PINNED = {"aiortc": "1.16.0"}


def require(owner: object, attribute: str, why: str) -> object:
    assert hasattr(owner, attribute), (
        f"aiortc moved {type(owner).__name__}.{attribute}, which media/aiortc_compat uses to "
        f"{why}: re-check media/aiortc_compat against the new version"
    )
    return getattr(owner, attribute)


def test_the_pinned_version_is_installed() -> None:
    for package, version in PINNED.items():
        assert importlib.metadata.version(package) == version, (
            f"{package} is not {version}: check media/aiortc_compat before moving the pin"
        )


@pytest.fixture
async def pc():
    connection = RTCPeerConnection()
    connection.addTransceiver("audio", direction="sendrecv")
    connection.createDataChannel("probe")
    yield connection
    await connection.close()


async def test_receiver_internals_for_the_rtp_tap(pc: RTCPeerConnection) -> None:
    receiver = pc.getTransceivers()[0].receiver
    why = "route RTP to our code without a decoder thread"
    for name in (
        "_RTCRtpReceiver__started",
        "_RTCRtpReceiver__codecs",
        "_RTCRtpReceiver__remote_streams",
        "_RTCRtpReceiver__rtcp_task",
        "_handle_rtp_packet",
        "_handle_rtcp_packet",
        "_run_rtcp",
    ):
        require(receiver, name, why)
    assert isinstance(receiver._RTCRtpReceiver__remote_streams, dict)  # type: ignore[attr-defined]
    require(receiver.transport, "_register_rtp_receiver", why)
    assert list(inspect.signature(RTCRtpReceiver.receive).parameters) == ["self", "parameters"]
    assert list(inspect.signature(StreamStatistics).parameters) == ["clockrate"]
    require(StreamStatistics(48000), "add", "keep receive statistics for RTCP receiver reports")


async def test_sender_internals_for_forwarding(pc: RTCPeerConnection) -> None:
    sender = pc.getTransceivers()[0].sender
    why = "forward packed RTP and keep its sender reports true"
    for name in (
        "_RTCRtpSender__packet_count",
        "_RTCRtpSender__octet_count",
        "_RTCRtpSender__rtp_timestamp",
        "_RTCRtpSender__ntp_timestamp",
        "_ssrc",
        "_stream_id",
        "_track_id",
        "_handle_rtcp_packet",
    ):
        require(sender, name, why)
    require(sender.transport, "_send_rtp", why)
    assert isinstance(sender, RTCRtpSender)


async def test_connection_internals_for_the_sfu(pc: RTCPeerConnection) -> None:
    why = "drop stale transceivers and follow a transport move"
    transceivers = require(pc, "_RTCPeerConnection__transceivers", why)
    assert transceivers == pc.getTransceivers()
    assert isinstance(require(pc, "_RTCPeerConnection__seenMids", why), set)
    transceiver = pc.getTransceivers()[0]
    require(transceiver, "_get_mline_index", why)
    require(transceiver, "_codecs", "read the negotiated Opus payload type")
    require(transceiver, "_headerExtensions", "read the negotiated extension ids")
    assert pc.sctp is not None
    require(pc.sctp.transport, "_role", "allocate data channel ids of the SFU's parity")
    assert isinstance(require(pc.sctp, "_data_channels", "avoid taken channel ids"), dict)


def test_ice_internals_for_pinning() -> None:
    host_addresses = require(aioice.ice, "get_host_addresses", "pin ICE host candidates")
    assert list(inspect.signature(host_addresses).parameters) == ["use_ipv4", "use_ipv6"]
    assert "getDefaultIceServers" in RTCIceGatherer.__dict__, (
        "aiortc moved RTCIceGatherer.getDefaultIceServers, which media/aiortc_compat/ice.py "
        "replaces to drop the public STUN default"
    )
