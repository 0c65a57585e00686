"""The words the stages share: recipient statuses and their moves, notice reasons and
states, the SES tag names the sender attaches.

Two rules, as in h11's state machine:

* Everything that decides how a recipient's status may change lives here. The intake,
  the sender, the feedback policy and the store all write statuses; none of them has
  its own idea of which status may follow which.
* As much as possible is in the tables (`START`, `STATUS_ORDER`, `MOVES`), not in code
  paths, so tests/test_vocabulary.py can check every move against one literal table.

Values are `StrEnum`s: they are the text stored in the database and shown by the CLI,
and compare equal to that text, so rows read back need no conversion.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Status(enum.StrEnum):
    """Where one recipient of one submission stands; listed in the CLI's order."""

    SUPPRESSED = "suppressed"  # dropped at DATA (suppressed for the message's class); never sent
    QUEUED = "queued"  # spooled, waiting for the sender
    SENT = "sent"  # SES accepted it
    DELAYED = "delayed"  # SES reported a DeliveryDelay
    DELIVERED = "delivered"
    FAILED = "failed"  # SES refused it for good, the relay gave up retrying, or rendering failed
    REJECTED = "rejected"  # SES rejected it (virus)
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# How a recipient starts: the intake writes one of these at DATA.
START: frozenset[Status] = frozenset({Status.QUEUED, Status.SUPPRESSED})

# The rank, weakest first. After the start, a status only moves to the right: the sender
# records QUEUED -> SENT or FAILED, feedback events move it further. Events arrive in any
# order, and what the sender most needs to know (a complaint, a bounce) must not be hidden
# by a late Delivery or a redelivered Send. SUPPRESSED is not on the rank: nothing follows it.
STATUS_ORDER: tuple[Status, ...] = (
    Status.QUEUED,
    Status.SENT,
    Status.DELAYED,
    Status.DELIVERED,
    Status.FAILED,
    Status.REJECTED,
    Status.BOUNCED,
    Status.COMPLAINED,
)
STATUS_RANK: Mapping[str, int] = MappingProxyType({s: i for i, s in enumerate(STATUS_ORDER)})

# Which status may follow which (every move in one table).
MOVES: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.SUPPRESSED: frozenset(),
        **{s: frozenset(STATUS_ORDER[i + 1 :]) for i, s in enumerate(STATUS_ORDER)},
    }
)


def may_follow(current: str | None, new: str) -> bool:
    """May a recipient in `current` (None: not recorded yet) move to `new`?"""
    if current is None:
        return new in START
    return new in MOVES.get(Status(current), frozenset())


def advance_status(current: str | None, new: str) -> str:
    """The stronger of two ranked statuses (see STATUS_ORDER); ValueError for other names."""
    for name in (new, current):
        if name is not None and name not in STATUS_RANK:
            raise ValueError(f"unknown recipient status {name!r}; expected one of {', '.join(STATUS_ORDER)}")
    if current is None:
        return new
    return new if may_follow(current, new) else current


class NoticeReason(enum.StrEnum):
    """Why the original sender is owed a notice; the composer keys its text on this."""

    PERMANENT_BOUNCE = "permanent_bounce"
    SOFT_BOUNCE_ESCALATED = "soft_bounce_escalated"
    SENDER_AT_FAULT = "sender_at_fault"  # manual intervention: fix DMARC/SPF/DKIM, content, IP
    MESSAGE_TOO_LARGE = "message_too_large"  # manual intervention: the message, not the mailbox
    MESSAGE_REJECTED_CONTENT = "message_rejected_content"  # ditto (content / attachment)
    REJECT = "reject"
    RENDERING_FAILURE = "rendering_failure"
    SEND_FAILED = "send_failed"  # the sender: SES refused it for good, or retries ran out
    SUPPRESSED = "suppressed"  # the intake: dropped at DATA ([notices] on_suppressed_at_data)


class NoticeState(enum.StrEnum):
    """Where an owed notice stands; PENDING until it is delivered or settled otherwise."""

    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # must not be sent (null or daemon sender, automatic original, unknown reason)
    FAILED = "failed"  # refused for good by the sender's mail server, or cannot be composed


class Tag(enum.StrEnum):
    """SES message tags the sender puts on every call; SES echoes them in events' mail.tags."""

    MESSAGE_CLASS = "message-class"
    SUBMISSION_ID = "submission-id"


def is_one_of(kind: type[enum.StrEnum], value: object) -> bool:
    """Is `value` one of `kind`'s values? For text read back from the store or a queue
    (`value in kind` raises TypeError for plain strings before Python 3.12)."""
    return any(value == member for member in kind)
