"""The clear rules and the history they read (pure): what a merge changed, which rows tell
of the entry on file, how long a cleared entry lasted, which clears need --force and a
--reason, the daily limit, and the words of a refusal; and the story `show` tells."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from relay.clearing import ClearRequest, guard, judge, left_line, refusal_lines
from relay.ops.suppression_story import step_json, step_lines, story, story_lines
from relay.suppression import Cause, Level, Suppression
from relay.suppression_history import Change, HistoryRow, Source, change_of, current, window_of
from tests.support.entries import NOW, suppression

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
ADDR = "a@example.org"


def row(change: Change, at: datetime = NOW, *, source: Source = Source.EVENT, klass: str = "*", **kw: object):
    values: dict[str, object] = {
        "id": 0, "address": ADDR, "klass": klass, "at": at, "change": change, "source": source,
        "actor": "feedback", "level": Level.HARD, "cause": Cause.BOUNCE, "reason": "r", "expires_at": None,
        "note": None, "event_id": None, "feedback_id": None, "ses_message_id": None, "refused_count": 0,
        "last_refused_at": None, "window_seconds": None,
    }  # fmt: skip
    values.update(kw)
    return HistoryRow(**values)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- what a merge changed

SOFT = suppression(ADDR, level=Level.SOFT, expires_at=NOW + HOUR, reason="Transient/General")
# (name, on file, merged, change)
CHANGES = [
    ("nothing on file: created", None, SOFT, Change.CREATED),
    ("an expired entry on file: renewed", replace(SOFT, expires_at=NOW - HOUR), SOFT, Change.RENEWED),
    ("soft to hard: raised", SOFT, replace(SOFT, level=Level.HARD, expires_at=NOW + 30 * DAY), Change.RAISED),
    ("a later expiry: extended", SOFT, replace(SOFT, expires_at=NOW + 2 * HOUR), Change.EXTENDED),
    ("an expiry to never: extended", SOFT, replace(SOFT, expires_at=None), Change.EXTENDED),
    ("a new reason: restated", SOFT, replace(SOFT, reason="Transient/MailboxFull"), Change.RESTATED),
    ("the same, another event: restated", SOFT, replace(SOFT, feedback_id="fb-2"), Change.RESTATED),
    ("the same, only last raised moved: nothing", SOFT, replace(SOFT, updated_at=NOW + HOUR / 2), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("on_file", "merged", "change"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_change_of(on_file: Suppression | None, merged: Suppression, change: Change | None) -> None:
    assert change_of(on_file, merged, NOW) == change


def test_the_rows_of_the_entry_on_file_start_at_its_last_creation() -> None:
    rows = [
        row(Change.CREATED, NOW - 3 * DAY, source=Source.SES_LIST),
        row(Change.CLEARED, NOW - 2 * DAY, source=Source.ADMIN),
        row(Change.CREATED, NOW - DAY),
        row(Change.CREATED, NOW - DAY, klass="bulk"),
        row(Change.EXTENDED, NOW),
    ]
    assert current(rows, "*") == [rows[2], rows[4]]
    assert current(rows, "bulk") == [rows[3]]
    assert current(rows[:2], "*") == []
    renewed = [row(Change.CREATED, NOW - DAY, source=Source.SES_LIST), row(Change.RENEWED, NOW)]
    assert current(renewed, "*") == renewed[1:]


def test_a_cleared_entry_lasted_from_the_change_that_set_its_expiry() -> None:
    entry = suppression(ADDR, expires_at=NOW + 30 * DAY, updated_at=NOW + 2 * DAY)
    rows = [row(Change.CREATED, NOW - HOUR, expires_at=NOW),
            row(Change.RAISED, NOW, expires_at=NOW + 30 * DAY),
            row(Change.RESTATED, NOW + 2 * DAY, expires_at=NOW + 30 * DAY)]  # fmt: skip
    assert window_of(entry, rows) == 30 * DAY
    assert window_of(entry, []) == 28 * DAY  # older than its history: from when it was last raised
    assert window_of(replace(entry, expires_at=None), rows) is None


# -------------------------------------------------------------------------- which clears are guarded


@pytest.mark.parametrize(
    ("cause", "rows", "guarded"),
    [
        (Cause.COMPLAINT, [], "a complaint"),
        (Cause.UNSUBSCRIBE, [], "an unsubscribe"),
        (Cause.BOUNCE, [row(Change.CREATED, source=Source.SES_LIST)], "from SES's account-level list"),
        (Cause.BOUNCE, [row(Change.CREATED), row(Change.RESTATED, source=Source.SES_LIST)], "from SES's"),
        (Cause.BOUNCE, [row(Change.ON_FILE, source=Source.SES_LIST)], "from SES's account-level list"),
        (Cause.BOUNCE,
         [row(Change.CREATED, source=Source.SES_LIST), row(Change.CLEARED), row(Change.CREATED)],
         None),
        (Cause.BOUNCE, [row(Change.CREATED, source=Source.IMPORT)], None),
        (Cause.MANUAL, [row(Change.CREATED, source=Source.ADMIN)], None),
        (Cause.BOUNCE, [], None),
    ],
    ids=["complaint", "unsubscribe", "pulled from SES", "restated by SES's list", "on file from SES",
         "SES's before a clear only", "imported bounce", "manual", "bounce"],
)  # fmt: skip
def test_guard(cause: Cause, rows: list[HistoryRow], guarded: str | None) -> None:
    found = guard(suppression(ADDR, cause=cause), rows)
    assert (found is None) if guarded is None else (found is not None and found.startswith(guarded))


COMPLAINT = suppression(ADDR, cause=Cause.COMPLAINT, level=Level.PERMANENT, reason="abuse")
BOUNCE = suppression(ADDR, reason="Permanent/General", expires_at=NOW + 30 * DAY)
# (name, entries, force, reason, cleared before, allowed)
REQUESTS = [
    ("a bounce: cleared", [BOUNCE], False, None, 0, True),
    ("a complaint without --force or --reason: refused", [COMPLAINT], False, None, 0, False),
    ("a complaint with --reason only: refused", [COMPLAINT], False, "asked us", 0, False),
    ("a complaint with --force only: refused", [COMPLAINT], True, None, 0, False),
    ("a complaint with --force and --reason: cleared", [COMPLAINT], True, "asked us", 0, True),
    ("a bounce and a complaint at once: refused as a whole", [BOUNCE, COMPLAINT], False, "x", 0, False),
    ("the 100th clear of the day: cleared", [BOUNCE], False, None, 99, True),
    ("the 101st clear of the day: refused", [BOUNCE], False, None, 100, False),
    ("two entries, one left: refused", [BOUNCE, replace(BOUNCE, klass="bulk")], False, None, 99, False),
    ("past the limit with --force: cleared", [BOUNCE], True, None, 500, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "force", "reason", "before", "allowed"),
    [r[1:] for r in REQUESTS],
    ids=[r[0] for r in REQUESTS],
)
def test_judge(
    entries: list[Suppression], force: bool, reason: str | None, before: int, allowed: bool
) -> None:
    request = ClearRequest(ADDR, None, "cli:alice", reason, force, max_per_day=100)
    verdict = judge(request, entries, [], before)
    assert (verdict.cleared == entries) is allowed
    assert bool(verdict.problems) is not allowed
    expected_left = max(0, 100 - before - (len(entries) if allowed else 0))
    assert verdict.left_today == expected_left


def test_nothing_to_clear_is_neither_cleared_nor_refused() -> None:
    verdict = judge(ClearRequest(ADDR, None, "cli:alice", max_per_day=0), [], [], 7)
    assert verdict.cleared == [] and verdict.problems == () and verdict.left_today == 0


def test_a_limit_of_zero_lets_only_forced_clears_through() -> None:
    request = ClearRequest(ADDR, None, "cli:alice", max_per_day=0)
    assert judge(request, [BOUNCE], [], 0).problems
    assert judge(replace(request, force=True), [BOUNCE], [], 0).cleared == [BOUNCE]


def test_without_a_limit_only_the_guard_counts() -> None:
    request = ClearRequest(ADDR, None, "store")
    verdict = judge(request, [BOUNCE], [], 10_000)
    assert verdict.cleared == [BOUNCE] and verdict.left_today is None
    assert left_line(verdict) == "no daily limit on clears"


def test_a_refusal_says_what_each_entry_is_why_it_is_guarded_what_is_missing_and_what_is_left() -> None:
    request = ClearRequest(ADDR, None, "cli:alice", "asked us", False, max_per_day=100)
    lines = refusal_lines(judge(request, [COMPLAINT, BOUNCE], [], 3))
    assert lines[0] == f"not cleared: {ADDR}"
    assert (
        lines[1]
        == "  all classes: permanent complaint since 2025-06-01T12:00:00.000000Z, never expires: abuse"
    )
    assert lines[2].startswith("    guarded: a complaint: the recipient reported this mail as spam")
    assert lines[3].startswith("  all classes: hard bounce since") and "expires 2025-07-01" in lines[3]
    assert lines[4].endswith(
        "cleared only with --force and --reason TEXT (kept in its history); missing: --force"
    )
    assert lines[5] == "  clears left today: 97 of 100 (the last 24 hours)"
    assert len(lines) == 6


def test_a_refusal_over_the_limit_names_the_count_and_the_key() -> None:
    request = ClearRequest(ADDR, "*", "cli:alice", max_per_day=2)
    lines = refusal_lines(judge(request, [BOUNCE], [], 2))
    assert "  2 clear(s) in the last 24 hours; 1 more would pass [policy] max_clears_per_day = 2 " \
           "(--force goes past it)" in lines  # fmt: skip
    assert lines[-1] == "  clears left today: 0 of 2 (the last 24 hours)"


def test_the_note_kept_of_a_clear() -> None:
    assert ClearRequest(ADDR, None, "a").note == "cleared by admin"
    assert ClearRequest(ADDR, None, "a", "asked us", force=True).note == "asked us (--force)"


# -------------------------------------------------------------------------- the story


def test_the_story_adds_the_moments_entries_expired_where_they_fall() -> None:
    rows = [
        row(Change.CREATED, NOW, level=Level.SOFT, expires_at=NOW + HOUR, event_id=1, ses_message_id="m-1",
            reason="Transient/General", note="Transient/General"),
        row(Change.RENEWED, NOW + 2 * HOUR, level=Level.SOFT, expires_at=NOW + 3 * HOUR, event_id=2),
        row(Change.CREATED, NOW + 2 * HOUR, klass="bulk", cause=Cause.COMPLAINT, level=Level.PERMANENT),
        row(Change.CLEARED, NOW + 4 * HOUR, klass="bulk", cause=Cause.COMPLAINT, level=Level.PERMANENT,
            source=Source.ADMIN, actor="cli:alice", note="asked us (--force)", refused_count=3,
            last_refused_at=NOW + 3 * HOUR),
    ]  # fmt: skip
    steps = story(rows, NOW + DAY)
    assert [(s.change, s.at - NOW, s.row.klass) for s in steps] == [
        ("created", timedelta(0), "*"),
        ("expired", HOUR, "*"),
        ("renewed", 2 * HOUR, "*"),
        ("created", 2 * HOUR, "bulk"),
        ("expired", 3 * HOUR, "*"),
        ("cleared", 4 * HOUR, "bulk"),
    ]
    assert [s.change for s in story(rows, NOW + 2 * HOUR + 1 * HOUR / 2)][-2:] == ["created", "cleared"]
    text = story_lines(steps)
    assert text[0] == "history (oldest first):"
    assert text[1] == "  2025-06-01T12:00:00.000000Z  all classes: created: soft bounce, expires " \
                      "2025-06-01T13:00:00.000000Z: Transient/General"  # fmt: skip
    assert text[2] == "      by SES event #1 (SES message m-1)"  # the note is the reason: said once
    assert (
        text[3]
        == "  2025-06-01T13:00:00.000000Z  all classes: expired: the soft bounce entry no longer blocks"
    )
    assert step_lines(steps[-1]) == [
        "  2025-06-01T16:00:00.000000Z  class bulk: cleared: was permanent complaint, never expires: r; "
        "it had refused 3 send(s), last at 2025-06-01T15:00:00.000000Z",
        "      by cli:alice: asked us (--force)",
    ]
    assert step_json(steps[1])["change"] == "expired" and step_json(steps[1])["actor"] is None
    assert step_json(steps[-1])["source"] == "admin" and step_json(steps[-1])["refused_count"] == 3
    assert story_lines([]) == ["history: none recorded"]


@pytest.mark.parametrize(
    ("source", "actor", "who"),
    [
        (Source.IMPORT, "cli:bob", "by cli:bob (import): from x.csv, SendGrid bounces"),
        (Source.SES_LIST, "cli:bob", "by cli:bob (SES's account-level list): from x.csv, SendGrid bounces"),
        (Source.ADMIN, "cli:bob", "by cli:bob: from x.csv, SendGrid bounces"),
    ],
)
def test_the_story_names_who_did_it(source: Source, actor: str, who: str) -> None:
    [step] = story(
        [row(Change.CREATED, source=source, actor=actor, note="from x.csv, SendGrid bounces")], NOW
    )
    assert step_lines(step)[1] == f"      {who}"
