"""Which local addresses aiortc offers as ICE host candidates.

aioice offers every non-loopback interface address. A local deployment (the embedded SFU and
its clients on one machine) and the test suite must keep all media on 127.0.0.1, so the
service pins the candidate addresses once at start-up. The setting is process-wide because
aioice reads it from a module-level function for every connection it gathers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import aioice.ice

__all__ = ["pin_host_addresses", "pinned_host_addresses"]

logger = logging.getLogger(__name__)

_original = aioice.ice.get_host_addresses
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
        logger.info("ice host addresses: all interfaces")
        return
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError naming the bad address
    _pinned = tuple(addresses)
    aioice.ice.get_host_addresses = _pinned_host_addresses
    logger.info("ice host addresses pinned addresses=%s", ",".join(_pinned))


def pinned_host_addresses() -> tuple[str, ...] | None:
    return _pinned
