"""Suite-wide set-up: every WebRTC candidate stays on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina

from media.aiortc_compat import pin_host_addresses
from tests.support.postgres import PostgresServer, PostgresUnavailable
from tests.support.redis_server import RedisServer, RedisUnavailable


@pytest.fixture(autouse=True, scope="session")
def _loopback_only_ice() -> None:
    pin_host_addresses(["127.0.0.1"])


@pytest.fixture(autouse=True, scope="session")
def _quiet_retries() -> None:
    # Our client logs its own retries with context; stamina's bare warnings are noise here.
    stamina.instrumentation.set_on_retry_hooks([])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real Postgres server on a free loopback port, shared by the session; stopped at its end."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by the session; stopped at its end.

    Tests keep apart by key prefix, not by flushing: a test may restart it (losing every key).
    """
    try:
        server = RedisServer()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
