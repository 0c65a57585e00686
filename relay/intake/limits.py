"""Per-client and per-user counters (pure: no IO, the clock is injected).

One `ClientLimits` is shared by every listener of a relay, so a client cannot multiply
its allowance by connecting to several ports. Memory stays bounded: idle keys are
dropped as soon as their state is back to "nothing owed".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

Clock = Callable[[], float]
PRUNE_ABOVE = 10_000  # keys kept before idle ones are swept


class ConnectionCounter:
    """Open connections per key (client address); `acquire` fails at the limit."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> bool:
        current = self._open.get(key, 0)
        if current >= self.per_key:
            return False
        self._open[key] = current + 1
        return True

    def release(self, key: Hashable) -> None:
        current = self._open.get(key, 0) - 1
        if current > 0:
            self._open[key] = current
        else:
            self._open.pop(key, None)

    def count(self, key: Hashable) -> int:
        return self._open.get(key, 0)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per key: `per_minute` events, refilled smoothly, bursts up to `per_minute`.

    A smooth refill rather than a fixed minute window means a client cannot send
    twice its allowance across a window boundary.
    """

    def __init__(self, per_minute: int = 0, clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def allow(self, key: Hashable, per_minute: int | None = None) -> bool:
        """Take one token for `key`; False when none is left. A limit of 0 allows everything."""
        limit = self.per_minute if per_minute is None else per_minute
        if limit <= 0:
            return True
        now = self.clock()
        if len(self._buckets) > PRUNE_ABOVE:
            self._prune(now, limit)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit), now)
        else:
            bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.stamp) * limit / 60.0)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _prune(self, now: float, limit: int) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * limit / 60.0 >= limit]
        for key in full:
            del self._buckets[key]


@dataclass
class ClientLimits:
    """The counters every listener shares: connections and messages per client, messages per user."""

    connections: ConnectionCounter = field(default_factory=lambda: ConnectionCounter(20))
    per_ip: RateLimiter = field(default_factory=RateLimiter)
    per_user: RateLimiter = field(default_factory=RateLimiter)

    @classmethod
    def from_limits(
        cls, connections_per_ip: int, messages_per_minute_per_ip: int, clock: Clock = time.monotonic
    ) -> ClientLimits:
        return cls(
            ConnectionCounter(connections_per_ip),
            RateLimiter(messages_per_minute_per_ip, clock),
            RateLimiter(0, clock),
        )
