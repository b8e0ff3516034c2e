"""Retrying one HTTP request to Realtime under a `Backoff`, on top of stamina.

stamina adds a bounded random jitter to an exponential backoff; we want the project's full
jitter (`Backoff.delay_s`), and stamina lets a retry hook return the delay itself, so the
policy computes it there and stamina does the looping, the attempt bound and its
instrumentation. Only requests made outside a session's negotiation lock are retried here
(see `RestApi.request`): nothing sleeps while holding a lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable

import stamina

from ..backoff import Backoff

__all__ = ["HTTP_RETRY", "retry_attempts"]

HTTP_RETRY = Backoff(initial_s=0.2, max_s=3.0, attempts=5, deadline_s=15.0)
"""Transport errors, 5xx and 425 on requests that may be repeated."""


def retry_attempts(
    policy: Backoff,
    should_retry: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> AsyncIterable[stamina.Attempt]:
    """stamina attempts (`async for attempt in ...: with attempt: ...`) under `policy`.

    `should_retry` sees every exception of an attempt (CancelledError included: say no);
    `on_retry(exc, retry_number, delay_s)` runs before each backoff, for logging.
    """
    if policy.attempts is None:
        raise ValueError("an HTTP retry policy needs a bounded number of attempts")
    deadline_s = policy.deadline_s if policy.deadline_s is not None else float("inf")
    started = time.monotonic()
    retries = 0

    def hook(exc: BaseException) -> bool | float:
        nonlocal retries
        if not should_retry(exc):
            return False
        delay = policy.delay_s(retries + 1)
        if time.monotonic() - started + delay >= deadline_s:
            return False
        retries += 1
        if on_retry is not None:
            on_retry(exc, retries, delay)
        # A float is stamina's "retry after this many seconds" (0 in its testing mode).
        return delay

    timeout = policy.deadline_s if policy.deadline_s is not None else None
    return stamina.retry_context(on=hook, attempts=policy.attempts, timeout=timeout)
