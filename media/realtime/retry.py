"""Retry timing shared by the Realtime and TURN clients, on top of stamina.

stamina adds a bounded random jitter to an exponential backoff; we want *full* jitter
(a uniform pick in [0, min(max, initial * 2^n)]) so that many bridges recovering from the
same Cloudflare blip spread out instead of retrying in lockstep. stamina lets a retry hook
return the delay itself, so the policy computes it there and stamina does the looping,
the attempt bound and its instrumentation.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

import stamina

__all__ = ["RetryPolicy", "retry_attempts"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry.

    attempts: total tries, the first included. initial_s: cap of the first backoff.
    max_s: cap of any backoff. deadline_s: no attempt starts later than this after the first.
    """

    attempts: int = 5
    initial_s: float = 0.2
    max_s: float = 3.0
    deadline_s: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0 <= self.initial_s <= self.max_s:
            raise ValueError("need 0 <= initial_s <= max_s")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    def backoff_s(self, retry_number: int) -> float:
        """Full-jitter delay before retry number `retry_number` (1-based)."""
        cap = min(self.max_s, self.initial_s * 2 ** (retry_number - 1))
        return random.uniform(0, cap)  # spreading load, not cryptography


def retry_attempts(
    policy: RetryPolicy,
    should_retry: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> AsyncIterable[stamina.Attempt]:
    """stamina attempts (`async for attempt in ...: with attempt: ...`) under `policy`.

    `should_retry` sees every exception of an attempt (CancelledError included: say no);
    `on_retry(exc, retry_number, delay_s)` runs before each backoff, for logging.
    """
    started = time.monotonic()
    retries = 0

    def hook(exc: BaseException) -> bool | float:
        nonlocal retries
        if not should_retry(exc):
            return False
        delay = policy.backoff_s(retries + 1)
        if time.monotonic() - started + delay >= policy.deadline_s:
            return False
        retries += 1
        if on_retry is not None:
            on_retry(exc, retries, delay)
        # A float is stamina's "retry after this many seconds" (0 in its testing mode).
        return delay

    return stamina.retry_context(on=hook, attempts=policy.attempts, timeout=policy.deadline_s)
