"""A STUN binding responder, so the local TURN endpoint can hand out a STUN URL that works
without reaching any public server."""

from __future__ import annotations

import asyncio
import logging

from aioice import stun

__all__ = ["StunServer"]

logger = logging.getLogger(__name__)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return  # not STUN; one bad datagram never matters
        if (
            request.message_method != stun.Method.BINDING
            or request.message_class != stun.Class.REQUEST
        ):
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


class StunServer:
    def __init__(self, host: str, port: int = 0) -> None:
        self._host = host
        self._port = port
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def url(self) -> str:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return f"stun:{host}:{port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            _Protocol, local_addr=(self._host, self._port)
        )

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
