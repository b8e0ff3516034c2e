"""Pinned ICE gathers loopback host candidates only and asks no public STUN server."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceGatherer


@pytest.mark.timeout(10)
async def test_a_default_connection_gathers_loopback_only():
    assert RTCIceGatherer.getDefaultIceServers() == []
    pc = RTCPeerConnection()  # no configuration: aiortc would add Google's STUN server
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    candidates = [
        line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
    ]
    await pc.close()
    assert candidates
    assert all(" 127.0.0.1 " in line and " typ host" in line for line in candidates), candidates
