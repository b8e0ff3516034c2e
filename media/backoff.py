"""Backoff: the one retry timing policy of the project.

Everything that tries again uses it: HTTP requests to Realtime (transport errors, 5xx, 425),
the room reconciler's subscriptions, peer recovery and the Discord voice rejoin. Delays use
full jitter (a uniform pick in [0, min(max, initial * 2^n)]), so many bridges that lost the
same upstream do not return in lockstep. Nothing sleeps on a backoff while holding a lock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.1
    """Cap of the first delay; the first attempt itself starts at once."""
    max_s: float = 5.0
    """Cap of any delay."""
    attempts: int | None = None
    """Total tries, the first included; None: keep trying until cancelled."""
    deadline_s: float | None = None
    """No attempt starts later than this after the first; None: no deadline."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0 <= self.initial_s <= self.max_s:
            raise ValueError("need 0 <= initial_s <= max_s")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    def delay_s(self, retry_number: int) -> float:
        """Full-jitter delay before retry number `retry_number` (1-based)."""
        cap = min(self.max_s, self.initial_s * 2 ** min(retry_number - 1, 32))
        return random.uniform(0, cap)  # spreading load, not cryptography

    def delays(self) -> Iterator[float]:
        """0 for the first attempt, then a full-jitter delay before each later one, within
        `attempts` and `deadline_s`."""
        started = time.monotonic()
        attempt = 0
        while self.attempts is None or attempt < self.attempts:
            delay = 0.0 if attempt == 0 else self.delay_s(attempt)
            if (
                attempt
                and self.deadline_s is not None
                and time.monotonic() - started + delay >= self.deadline_s
            ):
                return
            yield delay
            attempt += 1
