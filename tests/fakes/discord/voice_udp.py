"""The voice server's UDP socket: IP discovery, and RTP routed to sessions by SSRC."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Protocol

from .rtp import HEADER_SIZE, ip_discovery_reply, parse_ip_discovery_request

__all__ = ["RtpReceiver", "VoiceUdp"]

_log = logging.getLogger(__name__)

Address = tuple[str, int]


class RtpReceiver(Protocol):
    def on_udp(self, data: bytes, addr: Address) -> None: ...


class VoiceUdp(asyncio.DatagramProtocol):
    """One socket for every call, as a Discord voice server has: senders are told apart by
    the SSRC in each packet, which the voice gateway assigned in READY."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._receivers: dict[int, RtpReceiver] = {}

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> VoiceUdp:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return protocol

    @property
    def port(self) -> int:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def register(self, ssrc: int, receiver: RtpReceiver) -> None:
        self._receivers[ssrc] = receiver

    def unregister(self, ssrc: int) -> None:
        self._receivers.pop(ssrc, None)

    def sendto(self, data: bytes, addr: Address) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: Address) -> None:
        ssrc = parse_ip_discovery_request(data)
        if ssrc is not None:
            # Discord answers with the address it saw, which is what NAT traversal needs.
            self.sendto(ip_discovery_reply(ssrc, addr[0], addr[1]), addr)
            return
        if len(data) < HEADER_SIZE:
            return  # voice_recv's UDP keepalive: an 8-byte counter, nothing to answer
        ssrc = struct.unpack_from(">I", data, 8)[0]
        receiver = self._receivers.get(ssrc)
        if receiver is None:
            _log.debug("UDP packet for unknown SSRC %d from %s", ssrc, addr)
            return
        receiver.on_udp(data, addr)

    def error_received(self, exc: Exception) -> None:
        # A client that closed its socket makes the kernel report ICMP port unreachable.
        _log.debug("voice UDP error: %s", exc)
