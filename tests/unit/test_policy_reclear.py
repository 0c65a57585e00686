"""Bounced again after a clear, row by row, in the pure policy.

An address whose bounce entry an admin cleared, and that bounces again within
`[policy] reclear_window` (7 days) of the clear, is suppressed for twice the cleared
entry's window (when that is longer than the bounce's own), at the cleared level at
least, and the entry's reason says so. A cleared entry that never expired makes one
that never expires. Only bounces of the mailbox do this: a bounce that suppresses
nothing (the sender's or the message's fault, undetermined) stays that way.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from feedback.policy import RecipientHistory
from relay.config import PolicyConfig
from relay.suppression import Level
from relay.suppression_history import Cleared
from relay.vocabulary import NoticeReason as Notice
from tests.unit.test_policy import DMARC, NOW, bounce, fixture_event, hours_ago, run

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
FULL = "smtp; 552 5.2.2 Mailbox full"


def cleared(ago: timedelta, window: timedelta | None, level: Level = Level.HARD) -> Cleared:
    return Cleared(at=NOW - ago, level=level, window=window)


# (name, bounce (type, subtype), clears, expected level, expected lasting (None: never),
#  what the reason starts with ("": the bounce's own reason, untouched))
ROWS = [
    ("soft bounce 2 days after a 30-day hard entry was cleared: hard, 60 days",
     ("Transient", "General"), [cleared(2 * DAY, 30 * DAY)], Level.HARD, 60 * DAY,
     "bounced again 2d after a clear: twice the cleared entry's 30d; Transient/General"),
    ("soft bounce an hour after a soft hour was cleared: soft, 2 hours",
     ("Transient", "MailboxFull"), [cleared(HOUR, HOUR, Level.SOFT)], Level.SOFT, 2 * HOUR,
     "bounced again 1h after a clear: twice the cleared entry's 1h; Transient/MailboxFull"),
    ("Permanent/General after a soft hour was cleared: its own 30 days are longer",
     ("Permanent", "General"), [cleared(HOUR, HOUR, Level.SOFT)], Level.HARD, 30 * DAY,
     "bounced again 1h after a clear; Permanent/General"),
    ("Permanent/NoEmail after a clear: never expires, as it would anyway",
     ("Permanent", "NoEmail"), [cleared(DAY, 30 * DAY)], Level.HARD, None,
     "bounced again 1d after a clear; Permanent/NoEmail"),
    ("soft bounce after an entry that never expired was cleared: never expires",
     ("Transient", "General"), [cleared(3 * DAY, None)], Level.HARD, None,
     "bounced again 3d after a clear of an entry that never expired: until cleared; Transient/General"),
    ("exactly 7 days after the clear: still again",
     ("Transient", "General"), [cleared(7 * DAY, 30 * DAY)], Level.HARD, 60 * DAY,
     "bounced again 7d after a clear"),
    ("7 days and a second after the clear: an ordinary soft bounce",
     ("Transient", "General"), [cleared(7 * DAY + timedelta(seconds=1), 30 * DAY)], Level.SOFT, HOUR, ""),
    ("a bounce that happened before the clear (a late event): ordinary",
     ("Transient", "General"), [cleared(-HOUR, 30 * DAY)], Level.SOFT, HOUR, ""),
    ("no clear: ordinary", ("Transient", "General"), [], Level.SOFT, HOUR, ""),
    ("two clears: the latest one's window counts",
     ("Transient", "General"), [cleared(3 * DAY, 90 * DAY), cleared(DAY, 10 * DAY)], Level.HARD, 20 * DAY,
     "bounced again 1d after a clear: twice the cleared entry's 10d"),
    ("one clear of two entries: the longer window and the higher level count",
     ("Transient", "General"), [cleared(DAY, 10 * DAY, Level.SOFT), cleared(DAY, HOUR)], Level.HARD,
     20 * DAY, "bounced again 1d after a clear: twice the cleared entry's 10d"),
    ("a cleared permanent (imported) bounce entry: the level comes back",
     ("Transient", "General"), [cleared(DAY, 2 * DAY, Level.PERMANENT)], Level.PERMANENT, 4 * DAY,
     "bounced again 1d after a clear: twice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "clears", "level", "lasts", "reason"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_reclear_rows(
    kind: tuple[str, str], clears: list[Cleared], level: Level, lasts: timedelta | None, reason: str
) -> None:
    event = bounce(*kind, diagnostic=FULL if kind[0] == "Transient" else None)
    decision = run(event, history=RecipientHistory(clears=tuple(clears)))
    s = decision.suppression
    assert s is not None
    assert s.level is level
    assert s.expires_at == (None if lasts is None else NOW + lasts)
    if reason:
        assert s.reason.startswith(reason), s.reason
    else:
        assert "after a clear" not in s.reason and s.reason.startswith("Transient/General")
    assert decision.counts_transient is (kind[0] == "Transient")


def test_the_fifth_transient_bounce_after_a_clear_escalates_for_twice_the_cleared_window() -> None:
    history = RecipientHistory(transient_bounces=hours_ago(1, 2, 3, 4), clears=(cleared(5 * HOUR, 30 * DAY),))
    decision = run(bounce("Transient", "General", FULL), history=history)
    s = decision.suppression
    assert s is not None and s.level is Level.HARD and s.expires_at == NOW + 60 * DAY
    assert s.reason.startswith("bounced again 5h after a clear: twice the cleared entry's 30d; 5 transient")
    assert decision.notice == Notice.SOFT_BOUNCE_ESCALATED


@pytest.mark.parametrize(
    ("kind", "diagnostic"),
    [
        (("Undetermined", "Undetermined"), "smtp; 554 delivery error"),
        (("Permanent", "General"), DMARC),
        (("Transient", "MessageTooLarge"), "smtp; 552 5.3.4 Message size exceeds fixed limit"),
    ],
    ids=["undetermined", "sender at fault", "message at fault"],
)
def test_bounces_that_suppress_nothing_still_suppress_nothing_after_a_clear(
    kind: tuple[str, str], diagnostic: str
) -> None:
    history = RecipientHistory(clears=(cleared(HOUR, None),))
    assert run(bounce(*kind, diagnostic=diagnostic), history=history).suppression is None


def test_the_window_after_a_clear_is_configured() -> None:
    clears = RecipientHistory(clears=(cleared(2 * DAY, 30 * DAY),))
    event = bounce("Transient", "General", FULL)
    s = run(event, history=clears, config=PolicyConfig(reclear_window="1d")).suppression
    assert s is not None and s.level is Level.SOFT and s.expires_at == NOW + HOUR
    wider = run(event, history=clears, config=PolicyConfig(reclear_window="3d")).suppression
    assert wider is not None and wider.expires_at == NOW + 60 * DAY


def test_a_complaint_after_a_clear_is_an_ordinary_complaint() -> None:
    history = RecipientHistory(clears=(cleared(HOUR, None),))
    s = run(fixture_event("event_complaint.json"), history=history).suppression
    assert s is not None and s.level is Level.PERMANENT and "after a clear" not in s.reason
