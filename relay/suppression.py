"""Suppression entries and the rules for combining them (pure).

A suppression is kept per (address, class); class ALL ("*") blocks every class.
The rules here are the invariants of the suppression policy that hold whatever the
cause: levels never downgrade, expiries only extend, and an RCPT/DATA refusal is
phrased from the entry's cause.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

ALL = "*"


class Level(enum.IntEnum):
    """Ordered so that max() is "the stronger one"."""

    SOFT = 1
    HARD = 2
    PERMANENT = 3

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in cls)
            raise ValueError(f"unknown suppression level {text!r}; expected one of {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Cause(enum.StrEnum):
    """Why an address is suppressed; decides the SMTP reply's enhanced code."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"
    IMPORT = "import"


@dataclass(frozen=True)
class Suppression:
    address: str
    klass: str
    level: Level
    cause: Cause
    reason: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None  # None: until cleared by hand
    feedback_id: str | None = None
    ses_message_id: str | None = None
    refused_count: int = 0
    last_refused_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now

    def applies_to(self, klass: str) -> bool:
        return self.klass == ALL or self.klass == klass


def later_expiry(a: datetime | None, b: datetime | None) -> datetime | None:
    """None means "never expires", which outlasts any date."""
    if a is None or b is None:
        return None
    return max(a, b)


def merge(existing: Suppression | None, new: Suppression, *, set_at: datetime | None = None) -> Suppression:
    """Combine a new suppression of the same (address, class) with the one on file.

    Levels never downgrade and expiries only extend; the cause and reason (and the
    SES ids) follow the entry that sets the level, so "why is this blocked" names the
    strongest reason. The result does not depend on the order entries come in, so
    that events applied by several consumers give what one would give applying them
    in turn: `created_at` is the earliest, `updated_at` (last raised) the latest, and
    between two entries of one level the later one speaks (by `updated_at`; `set_at`
    is when the entry on file got its cause, when known to be earlier than its
    `updated_at`), then the same event's newer decision, then a fixed order of the
    ids and words. The refusal counters of the existing entry are kept.
    """
    if existing is None:
        return new
    stronger = new if _speaks_over(new, existing, set_at or existing.updated_at) else existing
    return replace(
        existing,
        level=max(existing.level, new.level),
        expires_at=later_expiry(existing.expires_at, new.expires_at),
        cause=stronger.cause,
        reason=stronger.reason,
        feedback_id=stronger.feedback_id,
        ses_message_id=stronger.ses_message_id,
        created_at=min(existing.created_at, new.created_at),
        updated_at=max(existing.updated_at, new.updated_at),
    )


def _speaks_over(new: Suppression, existing: Suppression, existing_set_at: datetime) -> bool:
    """Whether `new` gives the merged entry its cause and reason (see `merge`)."""
    if new.level != existing.level:
        return new.level > existing.level
    if new.updated_at != existing_set_at:
        return new.updated_at > existing_set_at
    if (new.feedback_id, new.ses_message_id) == (existing.feedback_id, existing.ses_message_id):
        return True  # the same event decided again, knowing more (an escalation's count)
    return _words(new) > _words(existing)


def _words(entry: Suppression) -> tuple[str, str, str, str]:
    return (entry.feedback_id or "", entry.ses_message_id or "", str(entry.cause), entry.reason)


def combine(on_file: Suppression | None, new: Suppression, *, set_at: datetime | None = None) -> Suppression:
    """What the entry on file (expired or not) becomes with `new`; `on_file` itself when
    `new` changes nothing about it.

    Judged at `new`'s time (an event's own), so that entries arriving in any order end
    as they would in the order they were made: an entry that had expired by then is
    history, not a floor for the new one; a new one whose own window closed before the
    entry on file began belongs to an earlier entry (it arrived late, about a time the
    address was blocked for another while, or not at all) and would stretch this one
    back over a gap it never spanned. `set_at`: see `merge`.
    """
    if on_file is None or not on_file.active(new.updated_at):
        return new
    if new.expires_at is not None and new.expires_at <= on_file.created_at:
        return on_file
    return merge(on_file, new, set_at=set_at)


def blocking(entries: list[Suppression], klass: str | None, now: datetime) -> Suppression | None:
    """The entry that blocks sending to this address in `klass` (None: any class,
    i.e. only ALL entries count, as at RCPT time before the class is known).

    When several block, the strongest (then longest-lasting) is reported.
    """
    candidates = [
        e for e in entries if e.active(now) and (e.klass == ALL if klass is None else e.applies_to(klass))
    ]
    if not candidates:
        return None
    floor = datetime.min.replace(tzinfo=now.tzinfo)
    return max(candidates, key=lambda e: (e.level, e.expires_at is None, e.expires_at or floor))


def refusal(entry: Suppression) -> tuple[int, str]:
    """The SMTP reply for a recipient refused because of `entry`.

    Bounces describe the mailbox (5.1.1, "bad destination mailbox"); complaints,
    unsubscribes and manual blocks are policy (5.7.1, "delivery not authorized").
    """
    until = "indefinitely" if entry.expires_at is None else f"until {entry.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    scope = "all classes" if entry.klass == ALL else f"class {entry.klass}"
    detail = f"<{entry.address}> suppressed ({entry.cause}: {entry.reason}) for {scope} {until}"
    if entry.cause is Cause.BOUNCE:
        return 550, f"5.1.1 {detail}"
    return 550, f"5.7.1 {detail}"
