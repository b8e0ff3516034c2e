"""Receive buffers that let a connection's media ride out a busy event loop.

The local SFU reads every publisher's RTP on one event loop. The kernel's default UDP receive
buffer (212,992 bytes on Linux; a small loopback datagram costs ~830 bytes of it) holds about
256 packets: 80 ms of a session publishing the 64 tracks one request allows. A negotiation of
that many m-lines, or a process preempted on a loaded machine, stalls the loop longer, and the
kernel drops what does not fit — silently, before any counter of ours sees it (measured: 600 to
6,800 such drops per run of the 64-track forwarding test, all on the publisher's session
socket). So each SFU session's sockets (and any other connection that receives many tracks)
ask for room for about three seconds of that rate, as media servers do. Above
`net.core.rmem_max` only a privileged process gets it (SO_RCVBUFFORCE); otherwise the kernel
caps the request and we say which sysctl to raise.

aiortc and aioice keep the sockets private: this module is the one place that reaches them.
"""

from __future__ import annotations

import logging
import socket
import sys

from aiortc import RTCPeerConnection

__all__ = ["RECEIVE_BUFFER_BYTES", "enlarge_receive_buffers", "gathered_sockets"]

logger = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""Requested per socket; Linux books twice this for its own accounting (socket(7))."""

# Linux's value (asm-generic/socket.h); Python does not export it. Elsewhere the
# unprivileged option is all there is.
_SO_RCVBUFFORCE = 33 if sys.platform == "linux" else socket.SO_RCVBUF

_warned = False


def enlarge_receive_buffers(pc: RTCPeerConnection) -> None:
    """Ask for `RECEIVE_BUFFER_BYTES` on every socket `pc` has gathered; idempotent."""
    for sock in gathered_sockets(pc):
        _enlarge(sock)


def gathered_sockets(pc: RTCPeerConnection) -> list[socket.socket]:
    """The UDP sockets of `pc`'s ICE candidates gathered so far."""
    gatherers = {t.receiver.transport.transport.iceGatherer for t in pc.getTransceivers()}
    if pc.sctp is not None:
        gatherers.add(pc.sctp.transport.transport.iceGatherer)
    sockets = []
    for gatherer in gatherers:
        for protocol in gatherer._connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            if sock is not None:
                sockets.append(sock)
    return sockets


def _enlarge(sock: socket.socket) -> None:
    global _warned
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * RECEIVE_BUFFER_BYTES:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
    except OSError:  # unprivileged, or not Linux
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < RECEIVE_BUFFER_BYTES and not _warned:
        _warned = True
        logger.warning(
            "udp receive buffer capped requested_bytes=%d granted_bytes=%d "
            "hint='raise net.core.rmem_max to at least the requested size'",
            RECEIVE_BUFFER_BYTES,
            granted,
        )
