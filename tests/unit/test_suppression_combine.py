"""Merging suppression entries gives the same entry whatever order they come in (pure).

relay.suppression.merge and combine: levels never go down, expiries only extend,
`created_at` is the earliest and `updated_at` the latest, the later entry of a level
speaks, an entry that had expired is history, and one whose window closed before the
entry on file began belongs to an earlier entry.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from functools import reduce

from relay.suppression import Cause, Level, Suppression, combine, merge
from tests.support.entries import NOW, suppression

HOUR = timedelta(hours=1)


def event(
    hours: float, level: Level = Level.SOFT, lasts: timedelta | None = HOUR, tag: str = ""
) -> Suppression:
    """An entry an SES event asks for, dated by the event (`hours` after NOW)."""
    at = NOW + timedelta(hours=hours)
    return suppression(
        "a@example.org", level=level, created_at=at, updated_at=at,
        expires_at=None if lasts is None else at + lasts, reason=f"event at {hours}h{tag}",
        feedback_id=f"fb-{hours}{tag}", ses_message_id=f"m-{hours}{tag}",
    )  # fmt: skip


def fold(entries: list[Suppression]) -> Suppression:
    """The entries combined one after the other, as a store would (the cause's time known)."""
    on_file: Suppression | None = None
    for new in entries:
        set_at = None
        if on_file is not None:
            set_at = next(e.updated_at for e in entries if e.feedback_id == on_file.feedback_id)
        on_file = combine(on_file, new, set_at=set_at)
    assert on_file is not None
    return on_file


def test_the_later_entry_of_a_level_speaks_in_either_order() -> None:
    first, second = event(0, Level.HARD, 30 * 24 * HOUR), event(5, Level.HARD, 30 * 24 * HOUR)
    for pair in ([first, second], [second, first]):
        merged = fold(pair)
        assert (merged.reason, merged.feedback_id) == ("event at 5h", "fb-5")
        assert (merged.created_at, merged.updated_at) == (first.created_at, second.updated_at)
        assert merged.expires_at == second.expires_at


def test_a_stronger_level_speaks_whenever_it_came_and_the_expiry_is_the_latest() -> None:
    hard = event(1, Level.HARD, 24 * HOUR)
    soft_late = event(20, Level.SOFT, 10 * 24 * HOUR)
    for order in itertools.permutations([hard, soft_late, event(3)]):
        merged = fold(list(order))
        assert (merged.level, merged.reason) == (Level.HARD, "event at 1h")
        assert merged.expires_at == soft_late.expires_at and merged.created_at == hard.created_at


def test_an_entry_that_had_expired_is_history_and_a_late_one_from_before_it_changes_nothing() -> None:
    old, new = event(0), event(3)  # an hour each: the first was over when the second came
    assert fold([old, new]) == new
    on_file = combine(None, new)
    assert combine(on_file, old) is on_file  # the late one's window closed before this began


def test_a_late_entry_that_overlaps_the_start_of_the_one_on_file_joins_it() -> None:
    on_file, late = event(2), event(1.5)
    joined = combine(on_file, late)
    assert (joined.created_at, joined.updated_at, joined.expires_at) == (
        late.created_at, on_file.updated_at, on_file.expires_at
    )  # fmt: skip
    assert joined.reason == "event at 2h"  # the later of the level speaks


def test_every_order_of_entries_that_all_overlap_gives_one_entry() -> None:
    """(Where one entry bridges two that do not overlap, arriving after both, the one
    that came first was history already: feedback/reorder.py finds it again in the log.)"""
    run = [event(h) for h in (0, 0.3, 0.6, 0.9)] + [event(0.5, Level.HARD, 7 * 24 * HOUR, tag="-escalated")]
    results = {fold(list(order)) for order in itertools.permutations(run)}
    assert len(results) == 1
    [merged] = results
    assert (merged.level, merged.reason, merged.created_at) == (Level.HARD, "event at 0.5h-escalated", NOW)
    assert merged.updated_at == NOW + timedelta(hours=0.9)


def test_the_same_event_decided_again_speaks_over_its_first_decision() -> None:
    first = event(1, Level.HARD, 7 * 24 * HOUR)
    again = Suppression(**{**first.__dict__, "reason": "6 transient bounces within 1d"})
    assert merge(first, again).reason == "6 transient bounces within 1d"
    assert merge(again, first).reason == "event at 1h"  # the newer decision is the one merged in


def test_equal_entries_at_one_moment_are_ordered_by_their_ids_and_words() -> None:
    a, b = event(1, Level.PERMANENT, None, tag="a"), event(1, Level.PERMANENT, None, tag="b")
    assert merge(a, b).feedback_id == merge(b, a).feedback_id == "fb-1b"
    assert reduce(lambda x, y: merge(x, y), [b, a, b]).cause is Cause.BOUNCE
