"""relay/vocabulary.py against one literal table of every allowed status move.

The table below is written out by hand, not derived from the code: a change to which
status may follow which has to be made here too, on purpose. The stored text of every
status, notice reason, notice state and tag is pinned as well, since rows already in a
database and events already in SES's queues carry it.
"""

from __future__ import annotations

import itertools

import pytest

from relay.intake.classes import RESERVED_TAGS
from relay.vocabulary import (
    MOVES,
    START,
    STATUS_ORDER,
    STATUS_RANK,
    NoticeReason,
    NoticeState,
    Status,
    Tag,
    advance_status,
    is_one_of,
    may_follow,
)

# current status (None: no row yet) -> the statuses that may follow it
ALLOWED: dict[str | None, set[str]] = {
    None: {"queued", "suppressed"},
    "suppressed": set(),
    "queued": {"sent", "delayed", "delivered", "failed", "rejected", "bounced", "complained"},
    "sent": {"delayed", "delivered", "failed", "rejected", "bounced", "complained"},
    "delayed": {"delivered", "failed", "rejected", "bounced", "complained"},
    "delivered": {"failed", "rejected", "bounced", "complained"},
    "failed": {"rejected", "bounced", "complained"},
    "rejected": {"bounced", "complained"},
    "bounced": {"complained"},
    "complained": set(),
}
STATUSES = [s for s in ALLOWED if s is not None]
RANKED = [s for s in STATUSES if s != "suppressed"]


def test_the_table_names_every_status() -> None:
    assert set(STATUSES) == set(Status)
    assert {str(k): {str(s) for s in v} for k, v in MOVES.items()} == {k: v for k, v in ALLOWED.items() if k}
    assert START == ALLOWED[None]


@pytest.mark.parametrize(("current", "new"), list(itertools.product([None, *STATUSES], STATUSES)))
def test_every_move(current: str | None, new: str) -> None:
    assert may_follow(current, new) is (new in ALLOWED[current])


@pytest.mark.parametrize(("current", "new"), list(itertools.product([None, *RANKED], RANKED)))
def test_advance_status_takes_the_allowed_move_or_stays(current: str | None, new: str) -> None:
    expected = new if current is None or new in ALLOWED[current] else current
    assert advance_status(current, new) == expected


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (None, "sent", "sent"),
        ("queued", "sent", "sent"),
        ("sent", "delayed", "delayed"),
        ("delayed", "delivered", "delivered"),
        ("delivered", "delayed", "delivered"),
        ("bounced", "delivered", "bounced"),
        ("delivered", "bounced", "bounced"),
        ("bounced", "complained", "complained"),
        ("complained", "bounced", "complained"),
        ("rejected", "failed", "rejected"),
        ("failed", "sent", "failed"),
        ("sent", "sent", "sent"),
    ],
)
def test_advance_status(current: str | None, new: str, expected: str) -> None:
    assert advance_status(current, new) == expected


def test_status_rank_order() -> None:
    assert list(STATUS_RANK) == list(STATUS_ORDER)
    assert STATUS_ORDER == (
        "queued",
        "sent",
        "delayed",
        "delivered",
        "failed",
        "rejected",
        "bounced",
        "complained",
    )


@pytest.mark.parametrize(("current", "new"), [("sent", "lost"), ("lost", "sent")])
def test_advance_status_refuses_unknown_names(current: str, new: str) -> None:
    with pytest.raises(ValueError, match="unknown recipient status 'lost'"):
        advance_status(current, new)


@pytest.mark.parametrize(("current", "new"), [("suppressed", "sent"), ("sent", "suppressed")])
def test_suppressed_is_off_the_rank(current: str, new: str) -> None:
    """A recipient dropped at DATA was never sent: no SES event can move it, nor move to it."""
    with pytest.raises(ValueError, match="unknown recipient status 'suppressed'"):
        advance_status(current, new)


def test_may_follow_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="'lost'"):
        may_follow("lost", "sent")
    assert may_follow("sent", "lost") is False
    assert may_follow(None, "lost") is False


def test_stored_text() -> None:
    """The CLI lists statuses in this order (`submission list --status`)."""
    assert [s.value for s in Status] == [
        "suppressed", "queued", "sent", "delayed", "delivered", "failed", "rejected", "bounced", "complained",
    ]  # fmt: skip
    assert sorted(NoticeReason) == [
        "message_rejected_content", "message_too_large", "permanent_bounce", "reject", "rendering_failure",
        "send_failed", "sender_at_fault", "soft_bounce_escalated", "suppressed",
    ]  # fmt: skip
    assert sorted(NoticeState) == ["failed", "pending", "sent", "skipped"]
    assert sorted(Tag) == ["message-class", "submission-id"]
    assert RESERVED_TAGS == {"message-class", "submission-id"}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (NoticeReason, "send_failed", True),
        (NoticeReason, NoticeReason.SUPPRESSED, True),
        (NoticeReason, "Send_Failed", False),
        (NoticeReason, "", False),
        (NoticeReason, None, False),
        (NoticeState, "pending", True),
        (NoticeState, "queued", False),
        (Status, "queued", True),
    ],
)
def test_is_one_of(kind: type, value: object, expected: bool) -> None:
    assert is_one_of(kind, value) is expected
