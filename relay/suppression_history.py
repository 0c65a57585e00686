"""The history of suppression entries (pure): what changed, what made it change, and what
a history tells about an entry.

Every write that changes an entry (relay/store/writes.py: merge and clear) records a
`HistoryRow` in the same transaction: the entry as the change left it, and its origin
(an SES event by id, or an admin with their words). `suppression show` tells the story
from these rows; the clear rules (relay/clearing.py) and the policy's "bounced again
after a clear" rule (feedback/policy.py) read them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.suppression import Cause, Level, Suppression


class Change(enum.StrEnum):
    """What happened to an entry."""

    CREATED = "created"  # nothing was on file for the (address, class)
    RENEWED = "renewed"  # an expired entry was on file: it starts again
    RAISED = "raised"  # the level went up (the expiry may have moved too)
    EXTENDED = "extended"  # the same level, a later expiry
    RESTATED = "restated"  # the same level and expiry, a new cause or reason (the latest takes over)
    CLEARED = "cleared"  # removed by hand
    ON_FILE = "on-file"  # on file when the history began: what it was then, nothing before


# The changes after which an entry is a new one: what came before belongs to another.
STARTS = frozenset({Change.CREATED, Change.RENEWED, Change.ON_FILE})


class Source(enum.StrEnum):
    """What made a change: an SES event, or an admin by hand, by import or from SES's list."""

    EVENT = "event"  # an SES event, through the policy
    ADMIN = "admin"  # `suppression add` or `clear`
    IMPORT = "import"  # `suppression import` of our CSV or another provider's export
    SES_LIST = "ses-list"  # SES's account-level list: `sync-ses --pull`, or an import of its JSON


@dataclass(frozen=True)
class Origin:
    """Who or what changes an entry, as its history keeps it."""

    source: Source
    actor: str  # "feedback" for events, else the admin (`cli:USER`)
    note: str | None = None  # the admin's words, where an import came from, or what the event said
    event_id: int | None = None  # the events log's row (feedback_id, ses_message_id: the entry's)


@dataclass(frozen=True)
class HistoryRow:
    """One change of one entry: the entry as it left it (for a clear: as it was), and its origin."""

    id: int
    address: str
    klass: str
    at: datetime
    change: Change
    source: Source
    actor: str
    level: Level
    cause: Cause
    reason: str
    expires_at: datetime | None
    note: str | None
    event_id: int | None
    feedback_id: str | None
    ses_message_id: str | None
    refused_count: int  # sends the entry had refused by then
    last_refused_at: datetime | None
    window_seconds: int | None  # at a clear: how long the entry was set to last (None: until cleared)


@dataclass(frozen=True)
class Cleared:
    """A bounce entry an admin cleared: what the policy weighs when the address bounces again."""

    at: datetime
    level: Level
    window: timedelta | None  # how long the entry was set to last; None: until cleared


def change_of(on_file: Suppression | None, merged: Suppression, at: datetime) -> Change | None:
    """What merging turned `on_file` (the row as stored, expired or not) into `merged`; None
    when nothing an admin would ask about changed (only "last raised" moved)."""
    if on_file is None:
        return Change.CREATED
    if not on_file.active(at):
        return Change.RENEWED
    if merged.level > on_file.level:
        return Change.RAISED
    was, now = on_file.expires_at, merged.expires_at
    if was is not None and (now is None or now > was):
        return Change.EXTENDED
    said = ("cause", "reason", "feedback_id", "ses_message_id")
    if any(getattr(on_file, name) != getattr(merged, name) for name in said):
        return Change.RESTATED
    return None


def current(rows: Iterable[HistoryRow], klass: str) -> list[HistoryRow]:
    """The rows of the entry now on file for `klass`: those since it was last created or renewed."""
    mine = [r for r in rows if r.klass == klass]
    start = 0
    for i, r in enumerate(mine):
        if r.change in STARTS:
            start = i
        elif r.change is Change.CLEARED:
            start = i + 1
    return mine[start:]


def from_ses_list(rows: Iterable[HistoryRow]) -> bool:
    """Whether SES's account-level list had a hand in the entry these rows tell of."""
    return any(r.source is Source.SES_LIST for r in rows)


def window_of(entry: Suppression, rows: Sequence[HistoryRow]) -> timedelta | None:
    """How long `entry` was set to last: from the change that set its expiry to the expiry
    (None: it never expires). `rows` are the entry's own (see `current`); without one that
    set this expiry (an entry older than its history), from when it was last raised."""
    if entry.expires_at is None:
        return None
    setter = next((r for r in rows if r.expires_at == entry.expires_at), None)
    since = setter.at if setter is not None else entry.updated_at
    return max(entry.expires_at - since, timedelta(0))
