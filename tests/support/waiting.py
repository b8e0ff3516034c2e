"""Wait for a condition instead of sleeping "long enough" before checking it.

For state that has no event to wait on (counters, library internals): the check is repeated
until it holds, so a loaded machine only makes the test slower, never wrong. The timeout is a
bound on a failure, not a timing assertion; keep it generous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["wait_until", "wait_until_async"]

POLL_S = 0.02


async def wait_until(
    predicate: Callable[[], object], timeout_s: float = 10.0, what: str = ""
) -> None:
    """Return once `predicate()` is truthy; AssertionError naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"not {what or 'true'} within {timeout_s} s") from None


async def wait_until_async(
    predicate: Callable[[], Awaitable[object]], timeout_s: float = 10.0, what: str = ""
) -> None:
    """`wait_until` for a check that has to await (an HTTP call, a stats report)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await predicate():
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"not {what or 'true'} within {timeout_s} s") from None
