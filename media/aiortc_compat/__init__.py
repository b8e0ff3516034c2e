"""Every use of aiortc's (and aioice's) internals, behind one door.

aiortc 1.16 (pinned) has no public way to receive or send encoded media, pin ICE host
candidates, or let an SFU move a stream between connections. What we need of its internals:

- `tap`: an RTP tap on receivers (packets to our code, no decoder thread) and an RTCP observer
  on senders and receivers (the peer's watchdog);
- `ice`: which host addresses aioice offers, and no public STUN default;
- `receive_buffers`: large UDP receive buffers on a connection's (private) sockets;
- `internals`: the SFU's sending path (packed RTP, sender-report figures), a stream's identity
  handed to a new sender, transceiver bookkeeping and what was negotiated.

`tests/unit/test_aiortc_compat.py` checks every attribute these modules touch and names the one
that moved when an upgrade breaks them.
"""

from .ice import pin_host_addresses, pinned_host_addresses
from .internals import (
    account_sent,
    data_channel_ids,
    dtls_role,
    inherit_seen_mids,
    mline_index,
    negotiated_codecs,
    negotiated_extensions,
    send_rtp,
    take_stream_identity,
    transceiver_list,
)
from .receive_buffers import RECEIVE_BUFFER_BYTES, enlarge_receive_buffers
from .tap import RtpHandler, install_rtcp_observer, install_tap

__all__ = [
    "RECEIVE_BUFFER_BYTES",
    "RtpHandler",
    "account_sent",
    "data_channel_ids",
    "dtls_role",
    "enlarge_receive_buffers",
    "inherit_seen_mids",
    "install_rtcp_observer",
    "install_tap",
    "mline_index",
    "negotiated_codecs",
    "negotiated_extensions",
    "pin_host_addresses",
    "pinned_host_addresses",
    "send_rtp",
    "take_stream_identity",
    "transceiver_list",
]
