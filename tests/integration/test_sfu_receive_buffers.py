"""The SFU's media sockets get receive buffers that outlast a stalled event loop."""

from __future__ import annotations

import os
import socket

import pytest

from media.aiortc_compat.receive_buffers import RECEIVE_BUFFER_BYTES, gathered_sockets
from tests.support.rtc import Client
from tests.support.signals import ToneTrack


def granted_at_least() -> int:
    """What the kernel lets this process have: all of it when privileged, else rmem_max."""
    if os.geteuid() == 0:
        return RECEIVE_BUFFER_BYTES
    with open("/proc/sys/net/core/rmem_max") as f:
        return min(RECEIVE_BUFFER_BYTES, int(f.read()))


@pytest.mark.timeout(30)
async def test_a_negotiated_session_has_large_receive_buffers(sfu, api):
    # Also fails loudly (naming the attribute) when aiortc or aioice move the sockets.
    publisher = Client(api)
    try:
        await publisher.open()
        await publisher.push(ToneTrack(440), "mic")
        sockets = gathered_sockets(sfu.registry.get(publisher.session_id).pc)
        assert sockets
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 >= granted_at_least()
    finally:
        await publisher.close()
