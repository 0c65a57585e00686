"""Planning a pull from / push to SES's account-level suppression list (pure)."""

from __future__ import annotations

from datetime import timedelta

from relay.ops.ses_sync import SesSuppressed, plan_pull, plan_push, reconcile, ses_index
from relay.suppression import ALL, Cause, Level
from tests.support.entries import NOW, suppression

# -- the pure planning -------------------------------------------------------------------


ours = suppression


def test_plan_pull_counts_only_active_all_class_entries_as_known() -> None:
    items = [
        SesSuppressed("a@example.com", "BOUNCE", NOW - timedelta(days=9)),
        SesSuppressed("A@example.com", "COMPLAINT", NOW),  # the same mailbox again: first one wins
        SesSuppressed("b@example.com", "COMPLAINT", NOW + timedelta(days=1)),  # clock skew
        SesSuppressed("c@example.com", "BOUNCE", NOW),
        SesSuppressed("no-at-sign", "BOUNCE", NOW),
    ]
    here = {
        "b@example.com": [ours("b@example.com", klass="bulk")],  # class-only: not known for all classes
        "c@example.com": [ours("c@example.com", expires_at=NOW - timedelta(seconds=1))],  # expired
    }
    plan = plan_pull(items, here, NOW)
    assert [e.address for e in plan.new] == ["a@example.com", "b@example.com", "c@example.com"]
    assert plan.known == [] and [a for a, _ in plan.invalid] == ["no-at-sign"]
    first = plan.new[0]
    assert (first.klass, first.level, first.cause, first.expires_at) == (ALL, Level.HARD, Cause.BOUNCE, None)
    assert first.created_at == NOW - timedelta(days=9)
    assert plan.new[1].level is Level.PERMANENT and plan.new[1].created_at == NOW


def test_plan_push_filters_and_maps_reasons() -> None:
    entries = [
        ours("bounce@example.com"),
        ours("complaint@example.com", cause=Cause.COMPLAINT, level=Level.PERMANENT),
        ours("unsub@example.com", cause=Cause.UNSUBSCRIBE),
        ours("manual@example.com", cause=Cause.MANUAL),
        ours("classy@example.com", klass="list", cause=Cause.COMPLAINT),
        ours("soon@example.com", expires_at=NOW + timedelta(hours=1)),
        ours("gone@example.com", expires_at=NOW - timedelta(hours=1)),
        ours("known@example.com"),
    ]
    at_ses = ses_index(
        [SesSuppressed("KNOWN@example.com", "BOUNCE", NOW), SesSuppressed("bad", "BOUNCE", NOW)]
    )
    plan = plan_push(entries, at_ses, NOW)
    assert plan.to_put == [("bounce@example.com", "BOUNCE"), ("complaint@example.com", "COMPLAINT")]
    assert plan.already == ["known@example.com"]
    assert plan.expiring == ["soon@example.com"]


def test_reconcile_compares_case_insensitively_and_only_active_entries() -> None:
    items = [
        SesSuppressed("Mixed@Example.COM", "BOUNCE", NOW - timedelta(days=2)),
        SesSuppressed("mixed@example.com", "COMPLAINT", NOW),  # the same mailbox twice at SES
        SesSuppressed("Not An Address", "BOUNCE", NOW),
        SesSuppressed("stale@example.com", "BOUNCE", NOW),
    ]
    here = [
        ours("mixed@example.com"),
        ours("stale@example.com", expires_at=NOW - timedelta(seconds=1)),  # expired: not ours any more
        ours("classy@example.com", klass="list", cause=Cause.COMPLAINT, level=Level.PERMANENT),
        ours("classy@example.com", klass="bulk", cause=Cause.UNSUBSCRIBE, level=Level.PERMANENT),
    ]
    report = reconcile(here, items, NOW)
    assert (report.here, report.at_ses, report.on_both) == (2, 3, 1)
    assert [(r.address, [e.klass for e in r.entries], r.pushable) for r in report.only_here] == [
        ("classy@example.com", ["bulk", "list"], False)
    ]
    assert [(r.address, r.item.address) for r in report.only_at_ses] == [
        ("not an address", "Not An Address"),
        ("stale@example.com", "stale@example.com"),
    ]
