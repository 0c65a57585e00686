"""The suppression policy table (README), one test per row, on events parsed from real fixtures."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from feedback.events import EventKind, FeedbackEvent, parse_ses
from feedback.policy import REASON_LIMIT, Decision, RecipientHistory, decide
from relay.config import PolicyConfig
from relay.suppression import ALL, Cause, Level, Suppression, merge
from relay.vocabulary import NoticeReason as Notice
from tests.conftest import FIXTURES

NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
CONFIG = PolicyConfig()
NO_HISTORY = RecipientHistory()
USER_UNKNOWN = "smtp; 550 5.1.1 user unknown"
DMARC = (
    "smtp; 550 5.7.26 Unauthenticated email from shop.example.com is not accepted "
    "due to domain's DMARC policy"
)


def fixture_event(name: str) -> FeedbackEvent:
    payload = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return parse_ses(payload)[0]


def bounce(
    bounce_type: str,
    subtype: str | None,
    diagnostic: str | None = USER_UNKNOWN,
    status: str | None = None,
    at: datetime = NOW,
) -> FeedbackEvent:
    return replace(
        fixture_event("event_bounce_permanent.json"),
        bounce_type=bounce_type,
        bounce_subtype=subtype,
        diagnostic_code=diagnostic,
        status=status,
        timestamp=at,
    )


def run(
    event: FeedbackEvent,
    *,
    klass: str | None = "transactional",
    history: RecipientHistory = NO_HISTORY,
    config: PolicyConfig = CONFIG,
) -> Decision:
    return decide(event, message_class=klass, history=history, config=config)


def suppression_of(decision: Decision) -> Suppression:
    assert decision.suppression is not None, decision
    return decision.suppression


def hours_ago(*hours: float) -> tuple[datetime, ...]:
    return tuple(NOW - timedelta(hours=h) for h in hours)


# --------------------------------------------------------------------------- bounce rows

# (bounce type, subtype, diagnostic, level, expires after, notice)
SUPPRESSING_BOUNCES = [
    ("Permanent", "NoEmail", USER_UNKNOWN, Level.HARD, None, Notice.PERMANENT_BOUNCE),
    (
        "Permanent",
        "Suppressed",
        "Amazon SES has suppressed sending to this address",
        Level.HARD,
        None,
        Notice.PERMANENT_BOUNCE,
    ),
    ("Permanent", "OnAccountSuppressionList", None, Level.HARD, None, Notice.PERMANENT_BOUNCE),
    ("Permanent", "General", USER_UNKNOWN, Level.HARD, timedelta(days=30), Notice.PERMANENT_BOUNCE),
    ("Permanent", "SomethingNew", USER_UNKNOWN, Level.HARD, timedelta(days=30), Notice.PERMANENT_BOUNCE),
    ("Permanent", None, USER_UNKNOWN, Level.HARD, timedelta(days=30), Notice.PERMANENT_BOUNCE),
    ("Transient", "General", "smtp; 451 4.3.0 try again later", Level.SOFT, timedelta(hours=1), None),
    ("Transient", "MailboxFull", "smtp; 552 5.2.2 Mailbox full", Level.SOFT, timedelta(hours=1), None),
]


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "diagnostic", "level", "lasts", "notice"),
    SUPPRESSING_BOUNCES,
    ids=[f"{t}/{s}" for t, s, *_ in SUPPRESSING_BOUNCES],
)
def test_suppressing_bounce_rows(
    bounce_type: str,
    subtype: str | None,
    diagnostic: str | None,
    level: Level,
    lasts: timedelta | None,
    notice: Notice | None,
) -> None:
    event = bounce(bounce_type, subtype, diagnostic)
    decision = run(event)
    s = decision.suppression
    assert s is not None
    assert (s.address, s.klass, s.level, s.cause) == ("nobody.here@example.net", ALL, level, Cause.BOUNCE)
    assert s.expires_at == (None if lasts is None else NOW + lasts)
    assert s.created_at == s.updated_at == NOW
    assert s.feedback_id == event.feedback_id and s.ses_message_id == event.ses_message_id
    assert decision.notice == notice
    assert decision.status == "bounced"
    assert decision.counts_transient is (bounce_type == "Transient")
    assert decision.review is None and decision.reputation_hit is None and not decision.engagement


def test_suppression_reason_names_type_subtype_and_diagnostic() -> None:
    decision = run(bounce("Permanent", "General", USER_UNKNOWN))
    assert decision.suppression is not None
    assert decision.suppression.reason == "Permanent/General: smtp; 550 5.1.1 user unknown"
    assert suppression_of(run(bounce("Permanent", "NoEmail", None))).reason == "Permanent/NoEmail"


@pytest.mark.parametrize("subtype", ["General", "NoEmail", "Suppressed"])
def test_permanent_bounce_with_sender_at_fault_diagnostic(subtype: str) -> None:
    decision = run(bounce("Permanent", subtype, DMARC, "5.7.26"), klass="list")
    assert decision.suppression is None  # the recipient is fine
    assert decision.review is not None and "authentication" in decision.review and "DMARC" in decision.review
    assert decision.reputation_hit == "list"
    assert decision.notice == Notice.SENDER_AT_FAULT
    assert decision.status == "bounced"
    assert decision.counts_transient is False


def test_sender_at_fault_with_unknown_class_counts_against_all() -> None:
    event = replace(bounce("Permanent", "General", DMARC), message_class=None)
    assert run(event, klass=None).reputation_hit == ALL


@pytest.mark.parametrize(
    ("subtype", "notice"),
    [
        ("MessageTooLarge", Notice.MESSAGE_TOO_LARGE),
        ("ContentRejected", Notice.MESSAGE_REJECTED_CONTENT),
        ("AttachmentRejected", Notice.MESSAGE_REJECTED_CONTENT),
    ],
)
def test_transient_bounce_caused_by_the_message(subtype: str, notice: Notice) -> None:
    decision = run(
        bounce("Transient", subtype, "smtp; 552 5.3.4 Message size exceeds fixed limit"),
        history=RecipientHistory(transient_bounces=hours_ago(1, 2, 3, 4)),
    )
    assert decision.suppression is None
    assert decision.notice == notice
    assert decision.counts_transient is False  # not a mailbox problem: never escalates
    assert decision.review is None
    assert decision.status == "bounced"


def test_undetermined_bounce_goes_to_review_and_counts_as_transient() -> None:
    decision = run(bounce("Undetermined", "Undetermined", "smtp; 554 delivery error"))
    assert decision.suppression is None
    assert decision.review is not None and decision.review.startswith("undetermined bounce: Undetermined")
    assert decision.counts_transient is True
    assert decision.notice is None
    assert decision.status == "bounced"


# --------------------------------------------------------------------------- escalation


def test_four_transient_bounces_in_24h_do_not_escalate() -> None:
    decision = run(
        bounce("Transient", "General"), history=RecipientHistory(transient_bounces=hours_ago(1, 5, 9))
    )
    assert decision.suppression is not None and decision.suppression.level is Level.SOFT
    assert decision.notice is None


def test_fifth_transient_bounce_in_24h_escalates_to_hard_for_7_days() -> None:
    history = RecipientHistory(transient_bounces=hours_ago(1, 5, 9, 23.9))
    decision = run(bounce("Transient", "MailboxFull", "smtp; 552 5.2.2 Mailbox full"), history=history)
    s = decision.suppression
    assert s is not None
    assert (s.level, s.klass, s.cause, s.expires_at) == (
        Level.HARD,
        ALL,
        Cause.BOUNCE,
        NOW + timedelta(days=7),
    )
    assert s.reason.startswith("5 transient bounces within 1d; last Transient/MailboxFull")
    assert decision.notice == Notice.SOFT_BOUNCE_ESCALATED
    assert decision.counts_transient is True


def test_five_transient_bounces_spread_over_25h_do_not_escalate() -> None:
    history = RecipientHistory(transient_bounces=hours_ago(6.25, 12.5, 18.75, 25))
    decision = run(bounce("Transient", "General"), history=history)
    assert decision.suppression is not None and decision.suppression.level is Level.SOFT
    assert decision.notice is None


def test_a_bounce_exactly_one_window_old_is_outside_it() -> None:
    history = RecipientHistory(transient_bounces=hours_ago(1, 2, 3, 24))
    assert suppression_of(run(bounce("Transient", "General"), history=history)).level is Level.SOFT


def test_window_is_anchored_on_event_times_so_a_late_backlog_still_escalates() -> None:
    bounced_at = NOW - timedelta(days=3)
    history = RecipientHistory(transient_bounces=tuple(bounced_at - timedelta(hours=h) for h in (1, 2, 3, 4)))
    decision = run(bounce("Transient", "General", at=bounced_at), history=history)
    assert decision.suppression is not None and decision.suppression.level is Level.HARD
    # Its expiry runs from the bounce, as it would have had the bounce been applied at once:
    # the same whenever (and by whichever consumer) it is applied.
    assert decision.suppression.expires_at == bounced_at + timedelta(days=7)
    assert decision.suppression.created_at == decision.suppression.updated_at == bounced_at


def test_undetermined_bounce_can_be_the_one_that_escalates() -> None:
    history = RecipientHistory(transient_bounces=hours_ago(1, 2, 3, 4))
    decision = run(bounce("Undetermined", "Undetermined"), history=history)
    assert decision.suppression is not None and decision.suppression.level is Level.HARD
    assert decision.notice == Notice.SOFT_BOUNCE_ESCALATED
    assert decision.review is not None  # still reviewed


def test_after_a_manual_clear_the_history_is_empty_so_nothing_escalates() -> None:
    """The caller passes only bounces after the last manual clear; four earlier
    bounces cleared by an admin leave nothing to count."""
    cleared = RecipientHistory(transient_bounces=())
    decision = run(bounce("Transient", "General"), history=cleared)
    assert decision.suppression is not None and decision.suppression.level is Level.SOFT
    assert decision.notice is None


def test_configured_numbers_are_used() -> None:
    config = PolicyConfig(
        permanent_general_expiry="2d",
        soft_bounce_expiry="10m",
        escalate_after=2,
        escalate_window="1h",
        escalate_expiry="3d",
    )
    hard = suppression_of(run(bounce("Permanent", "General"), config=config))
    assert hard.expires_at == NOW + timedelta(days=2)
    soft = run(bounce("Transient", "General"), config=config).suppression
    assert soft is not None and soft.expires_at == NOW + timedelta(minutes=10)
    escalated = run(
        bounce("Transient", "General"),
        config=config,
        history=RecipientHistory(transient_bounces=hours_ago(0.5)),
    ).suppression
    assert escalated is not None and escalated.level is Level.HARD
    assert escalated.expires_at == NOW + timedelta(days=3)
    not_within = run(
        bounce("Transient", "General"),
        config=config,
        history=RecipientHistory(transient_bounces=hours_ago(1.5)),
    ).suppression
    assert not_within is not None and not_within.level is Level.SOFT


# --------------------------------------------------------------------------- complaints, unsubscribes


def test_complaint_suppresses_permanently_in_the_message_class() -> None:
    event = fixture_event("event_complaint.json")
    decision = run(event, klass="bulk")
    s = decision.suppression
    assert s is not None
    assert (s.address, s.klass, s.level, s.cause, s.expires_at) == (
        "annoyed@example.com",
        "bulk",
        Level.PERMANENT,
        Cause.COMPLAINT,
        None,
    )
    assert s.reason == "abuse"
    assert s.feedback_id == event.feedback_id
    assert decision.status == "complained"
    assert decision.notice is None and decision.review is None


def test_complaint_with_unknown_class_suppresses_all_classes() -> None:
    event = fixture_event("notification_complaint.json")  # identity notification: no tags
    assert event.message_class is None
    decision = run(event, klass=None)
    assert decision.suppression is not None and decision.suppression.klass == ALL
    assert decision.suppression.level is Level.PERMANENT


def test_complaint_class_falls_back_to_the_event_tag() -> None:
    event = fixture_event("event_complaint.json")  # tagged message-class=bulk
    assert suppression_of(run(event, klass=None)).klass == "bulk"
    assert suppression_of(run(event, klass="list")).klass == "list"  # the submission's class wins


def test_unsubscribe_from_a_topic_suppresses_permanently_in_the_class() -> None:
    decision = run(fixture_event("event_subscription.json"), klass="list")
    s = decision.suppression
    assert s is not None
    assert (s.address, s.klass, s.level, s.cause, s.expires_at) == (
        "leaving@example.com",
        "list",
        Level.PERMANENT,
        Cause.UNSUBSCRIBE,
        None,
    )
    assert (
        s.reason == "unsubscribed from topic ProductUpdates of contact list Customers via UnsubscribeHeader"
    )
    assert decision.notice is None and decision.status is None


def test_unsubscribe_all_with_unknown_class_suppresses_all_classes() -> None:
    event = replace(
        fixture_event("event_subscription.json"),
        unsubscribe_all=True,
        unsubscribed_topics=(),
        message_class=None,
    )
    decision = run(event, klass=None)
    assert decision.suppression is not None
    assert (decision.suppression.klass, decision.suppression.cause) == (ALL, Cause.UNSUBSCRIBE)
    assert "all topics" in decision.suppression.reason


def test_subscription_opt_in_changes_nothing() -> None:
    event = replace(fixture_event("event_subscription.json"), unsubscribe_all=False, unsubscribed_topics=())
    assert run(event) == Decision()


# --------------------------------------------------------------------------- status and engagement rows


@pytest.mark.parametrize(
    ("name", "status", "notice"),
    [
        ("event_reject.json", "rejected", Notice.REJECT),
        ("event_rendering_failure.json", "failed", Notice.RENDERING_FAILURE),
        ("event_delivery_delay.json", "delayed", None),
        ("event_delivery.json", "delivered", None),
        ("notification_delivery.json", "delivered", None),
        ("event_send.json", "sent", None),
    ],
)
def test_status_rows(name: str, status: str, notice: Notice | None) -> None:
    decision = run(fixture_event(name))
    assert decision == Decision(status=status, notice=notice)


@pytest.mark.parametrize("name", ["event_open.json", "event_click.json"])
def test_open_and_click_are_engagement_only(name: str) -> None:
    assert run(fixture_event(name)) == Decision(engagement=True)


def test_unknown_event_does_nothing() -> None:
    [event] = parse_ses(
        {"eventType": "Teleport", "mail": {"messageId": "m", "timestamp": "2024-03-05T10:00:00Z"}}
    )
    assert event.kind is EventKind.UNKNOWN
    assert run(event) == Decision()


def test_status_never_moves_backwards() -> None:
    delivery = fixture_event("event_delivery.json")
    assert run(delivery, history=RecipientHistory(status="bounced")).status == "bounced"
    assert run(delivery, history=RecipientHistory(status="sent")).status == "delivered"
    complaint = fixture_event("event_complaint.json")
    assert run(complaint, history=RecipientHistory(status="bounced")).status == "complained"


# --------------------------------------------------------------------------- levels never downgrade


def merged(decisions: list[Decision]) -> Suppression:
    suppressions = [d.suppression for d in decisions if d.suppression is not None]
    result = functools.reduce(merge, suppressions, None)
    assert result is not None
    return result


def test_hard_forever_then_soft_stays_hard_forever() -> None:
    result = merged([run(bounce("Permanent", "NoEmail")), run(bounce("Transient", "General"))])
    assert (result.level, result.expires_at) == (Level.HARD, None)
    assert result.reason.startswith("Permanent/NoEmail")


def test_soft_then_hard_general_raises_level_and_extends_expiry() -> None:
    result = merged([run(bounce("Transient", "General")), run(bounce("Permanent", "General"))])
    assert (result.level, result.expires_at) == (Level.HARD, NOW + timedelta(days=30))


def test_escalated_then_soft_keeps_the_escalation() -> None:
    five = run(
        bounce("Transient", "General"), history=RecipientHistory(transient_bounces=hours_ago(1, 2, 3, 4))
    )
    sixth = run(bounce("Transient", "General"))
    result = merged([five, sixth])
    assert (result.level, result.expires_at) == (Level.HARD, NOW + timedelta(days=7))


# --------------------------------------------------------------------------- reasons are safe to echo


def test_reasons_and_reviews_are_one_bounded_line() -> None:
    noisy = "smtp; 550-5.1.1 first line\r\n550-5.1.1 second\tline\r\n550 5.1.1 " + "x" * 1000
    s = run(bounce("Permanent", "General", noisy)).suppression
    assert s is not None
    assert len(s.reason) <= REASON_LIMIT
    assert "\r" not in s.reason and "\n" not in s.reason and "\t" not in s.reason
    assert s.reason.startswith("Permanent/General: smtp; 550-5.1.1 first line 550-5.1.1 second line")
    review = run(bounce("Undetermined", None, noisy)).review
    assert review is not None and len(review) <= REASON_LIMIT and "\n" not in review
