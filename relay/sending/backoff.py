"""Retry delays and the shared send-rate ceiling.

Both exist because SES punishes eagerness: a throttled account that retries in
lock-step stays throttled, and MaxSendRate is enforced per *recipient*, so a
worker pool that ignores it turns every burst into a wave of Throttling errors.

`backoff_delay` is pure. `TokenBucket` is the pure arithmetic of the limiter
(a function of the clock readings it is given), and `RateLimiter` is the thin
asyncio shell the sender's workers share.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

_EPSILON = 1e-9
_MAX_EXPONENT = 62  # 2**62 * any sane base is far past any cap; avoids float overflow


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry).

    Exponential with *full* jitter: uniform in [0, min(cap, base * 2**attempt)].
    Full jitter rather than "exponential plus a little noise" because when SES
    throttles, every worker failed at the same instant; spreading the retries over
    the whole window is what stops them from colliding again (see the AWS
    Architecture Blog, "Exponential Backoff And Jitter").
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base <= 0 or not math.isfinite(base):
        raise ValueError(f"base must be a positive finite number, got {base}")
    if cap < 0 or math.isnan(cap):
        raise ValueError(f"cap must be >= 0, got {cap}")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return (rng or random).uniform(0.0, ceiling)


def _unlimited(rate: float) -> bool:
    return rate <= 0 or math.isinf(rate) or math.isnan(rate)


class TokenBucket:
    """Token-bucket arithmetic with no clock and no sleeping of its own.

    Tokens refill at `rate` per second up to `burst`. A request for more than
    `burst` tokens is granted once the bucket is full and leaves it in debt, so
    later requests wait it off: that mirrors SES, which lets one call to many
    recipients through and then refuses until the rate has caught up, and it
    keeps the long-run ceiling at `rate` whatever the call sizes are.
    """

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        self._rate = 0.0
        self._burst_arg = burst
        self._burst = 1.0
        self._tokens = 0.0
        self._stamp = now
        self._waiting = False  # a request was told to wait and has not been granted yet
        self.set_rate(rate, now)
        self._tokens = self._burst  # start full: a fresh limiter may send a burst at once

    @property
    def rate(self) -> float:
        """Tokens per second; math.inf when unlimited."""
        return math.inf if _unlimited(self._rate) else self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def set_rate(self, rate: float, now: float, *, burst: float | None = None) -> None:
        """Change the rate from `now` on; tokens earned so far were earned at the old rate.

        `burst`, when given, replaces the bucket's size too (a rate shared with other
        hosts keeps its burst the same fraction of a second's sending).
        """
        self._refill(now)
        self._rate = rate
        if burst is not None:
            self._burst_arg = burst
        if _unlimited(rate):
            self._burst = math.inf if self._burst_arg is None else self._burst_arg
            return
        # Default burst: one second's worth, but at least one token so a
        # single-recipient call can always proceed.
        burst = self._burst_arg if self._burst_arg is not None else max(rate, 1.0)
        if burst <= 0 or not math.isfinite(burst):
            raise ValueError(f"burst must be a positive finite number, got {burst}")
        self._burst = burst
        self._tokens = min(self._tokens, burst)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)  # a clock that steps back earns nothing
        self._stamp = max(self._stamp, now)
        if not _unlimited(self._rate):
            earned = self._tokens + elapsed * self._rate
            # A request that was told to wait is owed every token since: a waiter that
            # wakes a little late (a busy event loop) must not lose what it earned
            # beyond the burst, or the long-run rate falls short of the ceiling. What
            # is left after its grant is capped again (try_take).
            self._tokens = earned if self._waiting else min(self._burst, earned)

    def try_take(self, n: float, now: float) -> float:
        """Take `n` tokens and return 0.0, or take nothing and return seconds to wait."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of tokens ({n})")
        if _unlimited(self._rate):
            return 0.0
        self._refill(now)
        needed = min(n, self._burst)  # oversized requests wait for a full bucket, then borrow
        # The tolerance absorbs float rounding: without it a refill that lands a
        # hair short asks for a wait too small to move a large clock reading.
        if self._tokens >= needed - _EPSILON * max(1.0, needed):
            self._tokens = min(self._burst, self._tokens - n)
            self._waiting = False
            return 0.0
        self._waiting = True
        return (needed - self._tokens) / self._rate


class RateLimiter:
    """An asyncio token bucket shared by the sender's workers.

    `acquire(n)` takes n = the number of recipients in the coming SES call.
    Waiters are served in arrival order (one asyncio.Lock, which is FIFO), so a
    50-recipient call is not starved by a stream of single-recipient ones.
    `set_rate` wakes sleeping waiters so that a lowered rate (after Throttling) or
    a raised one (GetSendQuota refreshed) takes effect at once.
    """

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, now=clock())
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @property
    def burst(self) -> float:
        return self._bucket.burst

    def set_rate(self, rate: float, *, burst: float | None = None) -> None:
        """Change the ceiling (and the burst, when given); rate <= 0 or inf means unlimited."""
        self._bucket.set_rate(rate, self._clock(), burst=burst)
        # Wake whoever sleeps on the old rate; a fresh Event for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` recipients may be sent."""
        if n < 0:
            raise ValueError(f"cannot acquire a negative number of tokens ({n})")
        async with self._lock:
            while True:
                wait = self._bucket.try_take(n, self._clock())
                if wait <= 0:
                    return
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), timeout=wait)
                except TimeoutError:
                    pass
