"""`TokenBucket`: rate limits (web requests, joins per invite, chat messages per author).

A bucket holds up to `capacity` tokens and gains `refill_per_s` per second; each request
takes one. Pure and synchronous: the clock is injectable, so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["KeyedBuckets", "RateSpec", "TokenBucket"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RateSpec:
    capacity: float
    """Burst size, in requests."""
    refill_per_s: float
    """Sustained rate, in requests per second."""

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.refill_per_s <= 0:
            raise ValueError("a rate needs capacity >= 1 and refill_per_s > 0")


@dataclass(slots=True)
class TokenBucket:
    spec: RateSpec
    clock: Clock = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = self.spec.capacity
        self._updated = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.spec.capacity, self._tokens + elapsed * self.spec.refill_per_s)
        self._updated = now

    def take(self, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 when allowed, else the seconds until it would be."""
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.spec.refill_per_s

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self.spec.capacity


class KeyedBuckets:
    """One bucket per key (an invite's jti), at most `max_keys` kept: least recently used go
    first, and a dropped bucket was either full or the oldest, so forgetting it is lenient
    only towards the longest-idle key."""

    def __init__(
        self, spec: RateSpec, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self._spec = spec
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._spec, self._clock)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(cost)

    def __len__(self) -> int:
        return len(self._buckets)
