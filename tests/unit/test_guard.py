"""The reputation guard's verdict on sending counts, with the default and configured minimums."""

from __future__ import annotations

import pytest

from relay.config import GuardConfig
from relay.ops.guard import verdict
from relay.ops.stats import Counts, share_of_sent


@pytest.mark.parametrize(
    ("counts", "paused"),
    [
        # a small sandbox run: one complaint in 209 sends is 0.48 %, and still one person
        (Counts(sent=209, complained=1), False),
        # under the default minimum volume of 1,000 sends nothing counts, whatever the rates
        (Counts(sent=999, bounced_permanent=500, complained=500), False),
        (Counts(sent=1000, bounced_permanent=25), True),  # 2.5 % >= 2.5 %, 25 >= 10 bounces
        (Counts(sent=1000, bounced_permanent=24), False),  # 2.4 %
        (Counts(sent=1000, complained=3), True),  # 0.3 % and 3 complaints
        (Counts(sent=1000, complained=2), False),  # 0.2 %, but only 2 complaints
        (Counts(sent=6000, complained=3), True),  # 0.05 % >= 0.05 %
        (Counts(sent=10000, complained=4), False),  # 0.04 %
        (Counts(sent=100000, complained=40, bounced_permanent=100), False),  # 0.04 % / 0.1 %
    ],
)
def test_guard_verdict_with_the_default_minimums(counts: Counts, paused: bool) -> None:
    assert (verdict(counts, GuardConfig()) is not None) is paused


@pytest.mark.parametrize(
    ("counts", "cfg", "paused"),
    [
        # A lower bounce threshold is where min_bounces binds: 9 bounces in 1,000 is 0.9 %.
        (Counts(sent=1000, bounced_permanent=9), {"bounce_rate": 0.005}, False),
        (Counts(sent=1000, bounced_permanent=10), {"bounce_rate": 0.005}, True),
        (Counts(sent=1000, bounced_permanent=9), {"bounce_rate": 0.005, "min_bounces": 5}, True),
        (Counts(sent=100, bounced_permanent=3), {"min_volume": 50, "min_bounces": 3}, True),
        (Counts(sent=100, bounced_permanent=3), {"min_volume": 101, "min_bounces": 3}, False),
        (Counts(sent=209, complained=1), {"min_volume": 100, "min_complaints": 1}, True),
        (Counts(sent=209, complained=1), {"min_volume": 100}, False),
        (Counts(sent=5000, complained=5), {"min_complaints": 6}, False),
    ],
)
def test_guard_verdict_with_configured_minimums(counts: Counts, cfg: dict, paused: bool) -> None:
    assert (verdict(counts, GuardConfig(**cfg)) is not None) is paused


def test_guard_defaults() -> None:
    cfg = GuardConfig()
    assert (cfg.min_volume, cfg.min_bounces, cfg.min_complaints) == (1000, 10, 3)
    assert (cfg.bounce_rate, cfg.complaint_rate) == (0.025, 0.0005)


def test_rates_are_shares_of_sent_counting_permanent_bounces_only_and_zero_before_any_send() -> None:
    counts = Counts(sent=200, bounced=7, bounced_permanent=4, bounced_transient=3, complained=1)
    assert (counts.bounce_rate, counts.complaint_rate) == (0.02, 0.005)
    unsent = Counts(bounced_permanent=2, complained=1)
    assert (unsent.bounce_rate, unsent.complaint_rate) == (0.0, 0.0)
    assert share_of_sent(0, 0) == 0.0
