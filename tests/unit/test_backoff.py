"""Backoff delays and the shared rate ceiling: fake-clock runs for precision, one real run for truth."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time

import pytest

from relay.sending.backoff import RateLimiter, TokenBucket, backoff_delay

# --- backoff_delay -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (8, 256.0), (9, 300.0), (60, 300.0)]
)
def test_backoff_stays_within_the_exponential_window(attempt: int, ceiling: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: spread over the whole window, not bunched at its top
    assert min(delays) < 0.1 * ceiling
    assert max(delays) > 0.9 * ceiling
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(3, rng=random.Random(7)) for _ in range(3)]
    second = [backoff_delay(3, rng=random.Random(7)) for _ in range(3)]
    assert first == second


def test_backoff_honours_base_and_cap() -> None:
    rng = random.Random(1)
    assert all(backoff_delay(4, base=0.5, cap=100, rng=rng) <= 8.0 for _ in range(200))
    assert all(backoff_delay(30, base=0.5, cap=10, rng=rng) <= 10.0 for _ in range(200))
    assert backoff_delay(3, cap=0.0, rng=rng) == 0.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert 0.0 <= backoff_delay(100_000, rng=random.Random(3)) <= 300.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": -1},
        {"attempt": 1, "base": 0.0},
        {"attempt": 1, "base": -2.0},
        {"attempt": 1, "base": math.inf},
        {"attempt": 1, "cap": -1.0},
    ],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoff_delay(**kwargs)  # type: ignore[arg-type]


# --- TokenBucket with a fake clock (pure: nothing sleeps) ------------------------------


def drive(bucket: TokenBucket, sizes: list[int], start: float = 0.0) -> tuple[float, list[float]]:
    """One consumer taking `sizes` in turn, jumping the fake clock by each returned wait."""
    now = start
    grants: list[float] = []
    for n in sizes:
        for _ in range(10_000):  # bounded: each wait makes progress
            wait = bucket.try_take(n, now)
            if wait == 0.0:
                break
            assert wait > 0
            now += wait
        else:
            pytest.fail("bucket never granted")
        grants.append(now)
    return now, grants


def test_sustained_single_recipient_rate_holds_the_ceiling() -> None:
    bucket = TokenBucket(100.0, burst=10, now=0.0)
    end, _ = drive(bucket, [1] * 5000)
    # 10 go at once from the full bucket, the other 4990 at 100/s
    assert end == pytest.approx(49.9, rel=1e-6)
    assert 5000 / end <= 100 * 1.03


def test_mixed_call_sizes_hold_the_ceiling_in_recipients() -> None:
    rng = random.Random(42)
    sizes = [rng.choice([1, 1, 1, 2, 5, 17, 50]) for _ in range(2000)]
    bucket = TokenBucket(14.0, now=0.0)  # burst defaults to one second's worth
    end, grants = drive(bucket, sizes)
    total = sum(sizes)
    assert total / end <= 14.0 * 1.02 + 50 / end  # at most one call's worth ahead of the line
    assert total / end >= 14.0 * 0.95
    # and no sliding 10-second window is far above the rate either
    sent_by = list(itertools.accumulate(sizes))
    for i, t in enumerate(grants):
        first = bisect.bisect_right(grants, t - 10.0)  # calls granted inside (t-10, t]
        window = sent_by[i] - (sent_by[first - 1] if first else 0)
        assert window <= 14.0 * 10 + 14 + 50, f"10 s window ending at {t:.1f}s sent {window}"


def test_a_waiter_that_wakes_late_loses_nothing_of_the_rate() -> None:
    """Calls of 5 at 50/s with a 2.5-token burst, each waiter waking 3 ms after its time (a
    busy event loop): the rate holds, rather than falling short by the lateness each time."""
    bucket = TokenBucket(50.0, burst=2.5, now=0.0)
    now, grants = 0.0, []
    for _ in range(500):
        for _ in range(100):  # bounded: each wait makes progress
            wait = bucket.try_take(5, now)
            if wait == 0.0:
                break
            now += wait + 0.003
        grants.append(now)
    assert len(grants) == 500
    rate = 5 * (len(grants) - 1) / (grants[-1] - grants[0])
    assert rate == pytest.approx(50.0, rel=0.01)
    # Idle after that: the bucket holds one burst again, not what a waiter was owed.
    assert bucket.try_take(5, now + 3600) == 0.0
    assert bucket.try_take(5, now + 3600) == pytest.approx(5 / 50)  # the debt of one call


def test_a_call_bigger_than_the_burst_goes_then_the_debt_is_waited_off() -> None:
    bucket = TokenBucket(1.0, burst=1, now=0.0)
    assert bucket.try_take(5, 0.0) == 0.0  # SES too lets a 5-recipient call through at 1/s...
    wait = bucket.try_take(1, 0.0)
    assert wait == pytest.approx(5.0)  # ...and then refuses for the next five seconds
    assert bucket.try_take(1, 4.9) > 0
    assert bucket.try_take(1, 5.0) == 0.0


def test_idle_time_earns_at_most_one_burst() -> None:
    bucket = TokenBucket(10.0, burst=20, now=0.0)
    drive(bucket, [1] * 20)
    end, grants = drive(bucket, [1] * 40, start=3600.0)  # an hour idle
    assert grants[19] == 3600.0  # the burst goes at once
    assert end == pytest.approx(3600.0 + 2.0)  # the rest at the rate, not at an hour's savings


def test_lowering_the_rate_takes_effect_immediately() -> None:
    bucket = TokenBucket(100.0, burst=10, now=0.0)
    t, _ = drive(bucket, [1] * 110)  # ~1 s at 100/s
    bucket.set_rate(10.0, t)
    end, _ = drive(bucket, [1] * 100, start=t)
    assert (end - t) == pytest.approx(10.0, rel=0.02)


def test_a_new_rate_may_bring_its_own_burst() -> None:
    bucket = TokenBucket(100.0, burst=10, now=0.0)  # full: 10 tokens
    bucket.set_rate(50.0, 0.0, burst=2)  # a share of the rate: the bucket shrinks with it
    assert (bucket.rate, bucket.burst) == (50.0, 2)
    end, grants = drive(bucket, [1] * 102)
    assert grants[:2] == [0.0, 0.0] and grants[2] > 0  # two at once, the rest at the rate
    assert end == pytest.approx(2.0)
    bucket.set_rate(100.0, end)  # no burst given: the one it has stays
    assert bucket.burst == 2


def test_raising_the_rate_does_not_refund_the_past() -> None:
    bucket = TokenBucket(1.0, burst=1, now=0.0)
    bucket.try_take(1, 0.0)
    bucket.set_rate(100.0, 0.5)  # half a token earned at the old rate
    assert bucket.try_take(1, 0.5) == pytest.approx(0.005)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf])
def test_zero_negative_or_infinite_rate_means_unlimited(rate: float) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert all(bucket.try_take(50, 0.0) == 0.0 for _ in range(10_000))
    assert bucket.rate == math.inf
    bucket.set_rate(1.0, 0.0)
    assert bucket.try_take(1, 0.0) == 0.0
    assert bucket.try_take(1, 0.0) > 0


def test_a_clock_that_steps_back_earns_nothing() -> None:
    bucket = TokenBucket(1.0, burst=1, now=100.0)
    bucket.try_take(1, 100.0)
    assert bucket.try_take(1, 50.0) == pytest.approx(1.0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(10.0, burst=0)
    with pytest.raises(ValueError):
        TokenBucket(10.0, burst=math.inf)
    with pytest.raises(ValueError):
        TokenBucket(10.0).try_take(-1, 0.0)


# --- RateLimiter (asyncio shell) ------------------------------------------------------


def test_real_time_workers_sharing_a_limiter_hold_the_ceiling() -> None:
    rate, burst, workers, duration = 200.0, 5.0, 8, 1.0

    async def run() -> tuple[int, float]:
        limiter = RateLimiter(rate, burst)
        sent = 0
        start = time.monotonic()
        deadline = start + duration

        async def worker(size: int) -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                await limiter.acquire(size)
                sent += size

        await asyncio.wait_for(asyncio.gather(*(worker(1 + i % 3) for i in range(workers))), timeout=5)
        return sent, time.monotonic() - start

    sent, elapsed = asyncio.run(run())
    ceiling = burst + rate * elapsed
    assert sent <= ceiling * 1.03 + 3, f"{sent} recipients in {elapsed:.2f}s; ceiling {ceiling:.0f}"
    assert sent >= 0.85 * rate * elapsed, f"only {sent} recipients in {elapsed:.2f}s"


def test_set_rate_wakes_a_waiter_sleeping_on_the_old_rate() -> None:
    async def run() -> float:
        limiter = RateLimiter(0.1, burst=1)  # next token in 10 s
        await limiter.acquire(1)
        started = time.monotonic()
        waiter = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        limiter.set_rate(1000.0)
        await asyncio.wait_for(waiter, timeout=2)
        return time.monotonic() - started

    assert asyncio.run(run()) < 0.5


def test_a_cancelled_waiter_takes_nothing_and_frees_the_line() -> None:
    async def run() -> None:
        limiter = RateLimiter(0.1, burst=1)
        await limiter.acquire(1)
        waiter = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.02)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.set_rate(0)  # unlimited: the next caller must not be stuck behind the cancelled one
        await asyncio.wait_for(limiter.acquire(3), timeout=1)

    asyncio.run(run())


def test_unlimited_limiter_never_waits_and_fake_clock_is_used() -> None:
    now = [1000.0]
    limiter = RateLimiter(0, clock=lambda: now[0])

    async def run() -> None:
        for _ in range(5000):
            await limiter.acquire(50)
        limiter.set_rate(2.0)
        await limiter.acquire(2)  # the full (fake) bucket
        assert limiter._bucket.try_take(1, now[0]) == pytest.approx(0.5)
        now[0] += 0.5
        await asyncio.wait_for(limiter.acquire(1), timeout=1)  # the fake clock says it is due

    asyncio.run(asyncio.wait_for(run(), timeout=5))
    assert limiter.rate == 2.0


def test_negative_acquire_is_refused() -> None:
    async def run() -> None:
        with pytest.raises(ValueError):
            await RateLimiter(10).acquire(-1)

    asyncio.run(run())
