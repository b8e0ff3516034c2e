"""Suite-wide set-up: every WebRTC candidate stays on 127.0.0.1."""

from __future__ import annotations

import pytest

from media.ice import pin_host_addresses


@pytest.fixture(autouse=True, scope="session")
def _loopback_only_ice() -> None:
    pin_host_addresses(["127.0.0.1"])
