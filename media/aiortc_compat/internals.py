"""The aiortc internals the local SFU relies on, one function each.

aiortc (pinned in pyproject) has no public API for what an SFU must do: send an RTP packet it
did not encode, keep a parked sender's report figures true, hand one stream's identity to a
new sender when a session moves to a new connection, find the transceivers a recycled m-line
left behind, or read what was negotiated for a transceiver. Each of those touches a private
attribute; they all live here, and `tests/unit/test_aiortc_compat.py` fails naming the
attribute when an aiortc upgrade moves one.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSctpTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters

__all__ = [
    "account_sent",
    "data_channel_ids",
    "dtls_role",
    "inherit_seen_mids",
    "mline_index",
    "negotiated_codecs",
    "negotiated_extensions",
    "send_rtp",
    "take_stream_identity",
    "transceiver_list",
]


async def send_rtp(sender: RTCRtpSender, data: bytes) -> None:
    """Send an already packed RTP packet on `sender`'s transport (SRTP-protected there)."""
    await sender.transport._send_rtp(data)


def account_sent(sender: RTCRtpSender, payload_bytes: int, rtp_timestamp: int, ntp: int) -> None:
    """Count a packet sent around `sender` so that its RTCP sender reports stay true."""
    sender._RTCRtpSender__packet_count += 1  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count += payload_bytes  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]


def take_stream_identity(sender: RTCRtpSender, old: RTCRtpSender) -> None:
    """`sender` continues `old`'s stream: same SSRC, msid and report counters (set before
    the description that announces `sender` is created)."""
    sender._ssrc = old._ssrc
    sender._stream_id = old._stream_id
    sender._track_id = old._track_id
    sender._RTCRtpSender__packet_count = old._RTCRtpSender__packet_count  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = old._RTCRtpSender__octet_count  # type: ignore[attr-defined]


def transceiver_list(pc: RTCPeerConnection) -> list[RTCRtpTransceiver]:
    """The connection's own list (not a copy): removing from it forgets a transceiver."""
    return pc._RTCPeerConnection__transceivers  # type: ignore[attr-defined,no-any-return]


def inherit_seen_mids(pc: RTCPeerConnection, old: RTCPeerConnection) -> None:
    """`pc` never hands out a mid that `old` used (a client must not see one twice)."""
    pc._RTCPeerConnection__seenMids |= old._RTCPeerConnection__seenMids  # type: ignore[attr-defined]


def mline_index(transceiver: RTCRtpTransceiver) -> int | None:
    return transceiver._get_mline_index()


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    return list(transceiver._codecs)


def negotiated_extensions(
    transceiver: RTCRtpTransceiver,
) -> list[RTCRtpHeaderExtensionParameters]:
    return list(transceiver._headerExtensions)


def dtls_role(sctp: RTCSctpTransport) -> str:
    """ "client" or "server": which parity of SCTP stream ids this side allocates."""
    return str(sctp.transport._role)


def data_channel_ids(sctp: RTCSctpTransport) -> set[int]:
    return set(sctp._data_channels)
