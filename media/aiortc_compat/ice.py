"""Which local addresses aiortc offers as ICE host candidates.

aioice offers every non-loopback interface address, and aiortc falls back to Google's public
STUN server for any connection configured without ICE servers. A local deployment (the
embedded SFU and its clients on one machine) and the test suite must keep all media on
127.0.0.1, so pinning the candidate addresses also drops that STUN default. The setting is
process-wide because aioice and aiortc read both from module-level functions for every
connection they gather.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import aioice.ice
from aiortc.rtcicetransport import RTCIceGatherer

__all__ = ["pin_host_addresses", "pinned_host_addresses"]

logger = logging.getLogger(__name__)

_original = aioice.ice.get_host_addresses
_original_default_servers = RTCIceGatherer.__dict__["getDefaultIceServers"]
_pinned: tuple[str, ...] | None = None


def _pinned_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    assert _pinned is not None
    chosen = []
    for address in _pinned:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            chosen.append(address)
    return chosen


def pin_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer only `addresses` as host candidates; `None` restores aioice's own choice."""
    global _pinned
    if addresses is None:
        _pinned = None
        aioice.ice.get_host_addresses = _original
        RTCIceGatherer.getDefaultIceServers = _original_default_servers  # type: ignore[method-assign]
        logger.info("ice host addresses: all interfaces")
        return
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError naming the bad address
    _pinned = tuple(addresses)
    aioice.ice.get_host_addresses = _pinned_host_addresses
    RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])  # type: ignore[method-assign,assignment]
    logger.info("ice host addresses pinned addresses=%s", ",".join(_pinned))


def pinned_host_addresses() -> tuple[str, ...] | None:
    return _pinned
