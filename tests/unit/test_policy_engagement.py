"""Engagement-aware escalation of transient bounces, row by row, in the pure policy.

A recipient who opened or clicked within `[policy] engaged_window` (30 days) escalates
to hard only after `escalate_after_engaged` (15) transient bounces within the
escalation window, instead of `escalate_after` (5).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from feedback.events import FeedbackEvent
from feedback.policy import RecipientHistory, needs_engagement
from relay.config import PolicyConfig
from relay.suppression import Level
from relay.vocabulary import NoticeReason as Notice
from tests.unit.test_policy import NOW, bounce, fixture_event, hours_ago, run


def earlier(count: int) -> tuple[datetime, ...]:
    """`count` transient bounces spread over the 21 hours before NOW (inside the 24 h window)."""
    return hours_ago(*(1.5 * (i + 1) for i in range(count)))


DAY = timedelta(days=1)
# (name, last open/click relative to the bounce (None: never), earlier transient bounces, level)
ROWS = [
    ("never engaged: 5th escalates", None, 4, Level.HARD),
    ("never engaged: 4th stays soft", None, 3, Level.SOFT),
    ("engaged yesterday: 5th stays soft", -DAY, 4, Level.SOFT),
    ("engaged yesterday: 14th stays soft", -DAY, 13, Level.SOFT),
    ("engaged yesterday: 15th escalates", -DAY, 14, Level.HARD),
    ("engaged exactly 30 days before: still engaged", -30 * DAY, 4, Level.SOFT),
    ("engaged 30 days and a second before: not engaged", -30 * DAY - timedelta(seconds=1), 4, Level.HARD),
    ("engaged 90 days before: not engaged", -90 * DAY, 4, Level.HARD),
    ("opened after the bounce (late event): engaged", timedelta(hours=2), 4, Level.SOFT),
]


@pytest.mark.parametrize(
    ("engaged", "before", "level"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_engagement_rows(engaged: timedelta | None, before: int, level: Level) -> None:
    history = RecipientHistory(
        transient_bounces=earlier(before), last_engagement=None if engaged is None else NOW + engaged
    )
    decision = run(bounce("Transient", "MailboxFull", "smtp; 552 5.2.2 Mailbox full"), history=history)
    s = decision.suppression
    assert s is not None and s.level is level
    if level is Level.HARD:
        assert decision.notice == Notice.SOFT_BOUNCE_ESCALATED
        assert s.expires_at == NOW + timedelta(days=7)
        assert s.reason.startswith(f"{before + 1} transient bounces within 1d")
        assert ("opened or clicked recently" in s.reason) is (engaged is not None and engaged >= -30 * DAY)
    else:
        assert decision.notice is None and s.expires_at == NOW + timedelta(hours=1)
    assert decision.counts_transient is True


def test_an_undetermined_bounce_of_an_engaged_recipient_needs_fifteen_too() -> None:
    engaged = RecipientHistory(last_engagement=NOW - DAY, transient_bounces=earlier(4))
    decision = run(bounce("Undetermined", "Undetermined"), history=engaged)
    assert decision.suppression is None and decision.review is not None  # counted, reviewed, no escalation
    history = replace(engaged, transient_bounces=earlier(14))
    fifteenth = run(bounce("Undetermined", "Undetermined"), history=history)
    assert fifteenth.suppression is not None and fifteenth.suppression.level is Level.HARD


def test_engagement_changes_nothing_for_a_permanent_bounce() -> None:
    engaged = RecipientHistory(last_engagement=NOW - timedelta(hours=1))
    decision = run(bounce("Permanent", "General"), history=engaged)
    assert decision.suppression is not None and decision.suppression.level is Level.HARD
    assert decision.notice == Notice.PERMANENT_BOUNCE


def test_configured_engagement_numbers_are_used() -> None:
    config = PolicyConfig(engaged_window="2h", escalate_after_engaged=3)
    recent = RecipientHistory(last_engagement=NOW - timedelta(hours=1), transient_bounces=earlier(2))
    third = run(bounce("Transient", "General"), history=recent, config=config).suppression
    assert third is not None and third.level is Level.HARD
    second = run(
        bounce("Transient", "General"), history=replace(recent, transient_bounces=earlier(1)), config=config
    ).suppression
    assert second is not None and second.level is Level.SOFT
    stale = replace(recent, last_engagement=NOW - timedelta(hours=3), transient_bounces=earlier(4))
    fifth = run(bounce("Transient", "General"), history=stale, config=config).suppression
    assert fifth is not None and fifth.level is Level.HARD  # outside the 2 h window: escalate_after (5)


def test_defaults() -> None:
    config = PolicyConfig()
    assert config.engaged_window == timedelta(days=30)
    assert config.escalate_after_engaged == 15
    with pytest.raises(ValueError, match="escalate_after_engaged"):
        PolicyConfig(escalate_after_engaged=0)


# (event, whether decide reads the last engagement): the caller queries the store only then.
NEEDS = [
    ("Transient/General", bounce("Transient", "General"), True),
    ("Transient/MailboxFull", bounce("Transient", "MailboxFull"), True),
    ("Undetermined", bounce("Undetermined", "Undetermined"), True),
    ("Transient/MessageTooLarge", bounce("Transient", "MessageTooLarge"), False),
    ("Transient/ContentRejected", bounce("Transient", "ContentRejected"), False),
    ("Permanent/General", bounce("Permanent", "General"), False),
    ("Permanent/NoEmail", bounce("Permanent", "NoEmail"), False),
]


@pytest.mark.parametrize(("event", "needed"), [r[1:] for r in NEEDS], ids=[r[0] for r in NEEDS])
def test_needs_engagement_only_for_bounces_that_may_escalate(event: FeedbackEvent, needed: bool) -> None:
    assert needs_engagement(event) is needed


@pytest.mark.parametrize(
    "name", ["event_complaint.json", "event_open.json", "event_click.json", "event_delivery.json"]
)
def test_other_events_never_need_engagement(name: str) -> None:
    assert needs_engagement(fixture_event(name)) is False
