"""Reconnect backoff, one policy for every connection that rebuilds itself.

The Realtime peer and the Discord voice side both recover by building a new connection; they
share this typed policy so that operators tune one thing. Delays use full jitter, so many
bridges that lost the same upstream do not return in lockstep.
"""

from __future__ import annotations

import random
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
    """None: keep trying until cancelled."""

    def delays(self) -> Iterator[float]:
        """0 for the first attempt, then a full-jitter delay before each later one."""
        attempt = 0
        while self.attempts is None or attempt < self.attempts:
            if attempt == 0:
                yield 0.0
            else:
                yield random.uniform(0, min(self.max_s, self.initial_s * 2 ** (attempt - 1)))
            attempt += 1
