"""The fast lane: unit tests open no sockets (no servers, no peers, no HTTP clients).

Anything that needs one belongs in tests/integration; this makes the mistake loud.
"""

from __future__ import annotations

import asyncio

import pytest

_NETWORK = ("create_server", "create_connection", "create_datagram_endpoint", "create_unix_server")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _NETWORK:

        def refuse(*args: object, _name: str = name, **kwargs: object) -> None:
            raise AssertionError(f"a unit test called loop.{_name}: move it to tests/integration")

        monkeypatch.setattr(asyncio.BaseEventLoop, name, refuse)
