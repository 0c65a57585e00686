"""Every write of the store, as a plain function of a connection (`Db`).

A backend runs each inside a transaction it owns (relay/store/sqlite.py: the single
commit thread, with group commit); none of these commits, rolls back or waits. The
SQL is the text both backends run: `INSERT ... ON CONFLICT`, `RETURNING`, `?`
placeholders (see relay/store/backend.py).
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from enum import Enum

from relay.clearing import LIMIT_SPAN, ClearRequest, ClearVerdict, judge
from relay.store import reads
from relay.store.backend import Db, marks
from relay.store.records import (
    ClassState,
    EventRecord,
    NoticeRecord,
    UnmatchedEvent,
)
from relay.suppression import Suppression, combine
from relay.suppression_history import Change, Origin, Source, change_of, current, window_of
from relay.timeutil import to_text
from relay.vocabulary import STATUS_RANK, NoticeState, advance_status

FEEDBACK = "feedback"  # the actor of changes the feedback consumer makes
BY_HAND = Origin(Source.ADMIN, "ses-relay")  # a merge whose caller names no origin
CLEARS_LOCK = " clears"  # Db.lock key of the daily count of clears (no address starts with a space)


def stored(value: object) -> object:
    """A record's value as the store keeps it: times as ISO text, enums by value."""
    if isinstance(value, datetime):
        return to_text(value)
    if isinstance(value, Enum):
        return value.value
    return value


def insert(table: str, names: Sequence[str], tail: str = "") -> str:
    """An INSERT of a record's fields (`names`, in their columns) into `table`."""
    columns = ", ".join(reads.column(n) for n in names)
    return f"INSERT INTO {table} ({columns}) VALUES ({marks(len(names))}){tail}"  # noqa: S608 - names only


class _Table:
    """A record kept as a row: every field in its column, then `extra` columns.

    The fields are read in one attrgetter call and only those typed as times or
    enums are converted, so a hot insert costs little more than a literal tuple.
    """

    def __init__(self, table: str, cls: type, extra: Sequence[str] = (), tail: str = "") -> None:
        names = tuple(f.name for f in fields(cls))
        hints = typing.get_type_hints(cls)
        self.sql = insert(table, (*names, *extra), tail)
        self.width = len(names) + len(extra)
        self._head, self._tail = self.sql[: self.sql.index(" VALUES ") + 8], tail
        self._get = operator.attrgetter(*names)
        self._converted = [i for i, name in enumerate(names) if _needs_converting(hints[name])]

    def rows_sql(self, count: int) -> str:
        """One INSERT of `count` rows."""
        row = f"({marks(self.width)})"
        return self._head + ",".join([row] * count) + self._tail

    def values(self, record: object, *extra: object) -> list[object]:
        values = list(self._get(record))
        for i in self._converted:
            values[i] = stored(values[i])
        values.extend(extra)
        return values


def _needs_converting(hint: object) -> bool:
    return hint in (datetime, datetime | None) or (isinstance(hint, type) and issubclass(hint, Enum))


def match_unmatched(db: Db, submission_id: str, ses_message_id: str, now: datetime) -> None:
    """Carry out what events logged before this SES message id was recorded owe its recipients.

    Runs in the transaction that records the id, so an event is applied exactly once
    whichever commits first: the feedback path (it finds no recipient and holds the
    event) or the sender (the feedback path then finds the recipient itself). Statuses
    only move forward; notices keep their dedupe keys (submission, recipient, reason).
    """
    held = db.fetchall(
        "SELECT u.*, e.status AS dsn_status, e.diagnostic, e.bounce_type, e.bounce_subtype "
        "FROM unmatched_events u JOIN events e ON e.id = u.event_id "
        "WHERE u.ses_message_id = ? ORDER BY u.event_id",
        (ses_message_id,),
    )
    if not held:
        return
    statuses = {
        r["address"]: r["status"]
        for r in db.fetchall(
            "SELECT address, status FROM recipients WHERE submission_id = ? AND ses_message_id = ?",
            (submission_id, ses_message_id),
        )
    }
    sub = db.fetchone("SELECT mail_from, class FROM submissions WHERE id = ?", (submission_id,))
    assert sub is not None  # the recipients just updated belong to it
    matched = []
    for row in held:
        address = row["recipient"]
        if address not in statuses:
            continue  # another chunk's recipient, or mail this relay did not send
        matched.append(row["event_id"])
        if row["status"] in STATUS_RANK and statuses[address] in STATUS_RANK:
            status = advance_status(statuses[address], row["status"])
            if status != statuses[address]:
                statuses[address] = status
                set_status(db, submission_id, address, status, row["detail"], now)
        if row["notice"] and sub["mail_from"]:
            notice = NoticeRecord(
                dedupe_key=f"{submission_id}:{address}:{row['notice']}",
                reason=row["notice"],
                recipient=address,
                sender=sub["mail_from"],
                submission_id=submission_id,
                ses_message_id=ses_message_id,
                klass=sub["class"],
                status=row["dsn_status"],
                diagnostic=row["diagnostic"],
                bounce_type=row["bounce_type"],
                bounce_subtype=row["bounce_subtype"],
                extra=row["notice_extra"],
            )
            add_notice(db, notice, now)
    if not matched:
        return
    db.execute(
        f"UPDATE events SET submission_id = ?, class = ? WHERE id IN ({marks(len(matched))})",  # noqa: S608
        (submission_id, sub["class"], *matched),
    )
    db.execute(f"DELETE FROM unmatched_events WHERE event_id IN ({marks(len(matched))})", matched)  # noqa: S608


STATUS_SQL = (
    "UPDATE recipients SET status = ?, detail = coalesce(?, detail), updated_at = ? "
    "WHERE submission_id = ? AND address = ?"
)


def set_status(
    db: Db, submission_id: str, address: str, status: str, detail: str | None, now: datetime
) -> None:
    db.execute(STATUS_SQL, (status, detail, to_text(now), submission_id, address))


# -- notices -------------------------------------------------------------------

NOTICES = _Table(
    "notices", NoticeRecord, ("created_at", "next_attempt_at"), " ON CONFLICT (dedupe_key) DO NOTHING"
)


def notice_values(rec: NoticeRecord, now: datetime) -> list[object]:
    return NOTICES.values(rec, to_text(now), to_text(now))


def add_notice(db: Db, notice: NoticeRecord, now: datetime) -> bool:
    """Queue a notice; False when one with the same dedupe key exists already."""
    return bool(db.execute(NOTICES.sql, notice_values(notice, now)))


def add_notices(db: Db, notices: Sequence[NoticeRecord], now: datetime) -> None:
    """Queue notices, but none whose dedupe key is queued already."""
    db.executemany(NOTICES.sql, [notice_values(n, now) for n in notices])


def settle_notice(
    db: Db, notice_id: int, state: str, *, now: datetime, error: str | None, next_attempt_at: datetime | None
) -> None:
    """Mark a notice delivered ('sent'), given up on ('skipped'), or due again later ('pending')."""
    if state == NoticeState.PENDING:
        if next_attempt_at is None:
            raise ValueError("a notice due again needs next_attempt_at")
        db.execute(
            "UPDATE notices SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
            (to_text(next_attempt_at), error, notice_id),
        )
    else:
        db.execute(
            "UPDATE notices SET state = ?, attempts = attempts + 1, last_error = ?, delivered_at = ? "
            "WHERE id = ?",
            (state, error, to_text(now), notice_id),
        )


# -- suppressions, class pauses, audit ---------------------------------------------

_UPDATED = [reads.column(f.name) for f in fields(Suppression) if f.name not in ("address", "klass")]
_SUPPRESSIONS = _Table(
    "suppressions",
    Suppression,
    tail=" ON CONFLICT (address, class) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _UPDATED),
)


def put_suppressions(db: Db, entries: Sequence[Suppression]) -> None:
    """Write entries as they are, replacing what is on file (merged by the caller already)."""
    db.executemany(_SUPPRESSIONS.sql, [_SUPPRESSIONS.values(s) for s in entries])


def merge_suppression(db: Db, new: Suppression, origin: Origin = BY_HAND) -> Suppression:
    """Merge `new` into the entry on file (relay.suppression.combine); the merged entry.

    A change (see relay.suppression_history.change_of) is recorded in the entry's
    history, with `origin`, in the same transaction.
    """
    db.lock((new.address,))
    return merge_one(db, new, origin)


def merge_one(db: Db, new: Suppression, origin: Origin) -> Suppression:
    """merge_suppression, the address locked already (relay.suppression.combine)."""
    on_file = reads.suppression(db, new.address, new.klass)
    set_at = None
    if on_file is not None and on_file.level == new.level and new.updated_at <= on_file.updated_at:
        set_at = reads.cause_set_at(db, on_file)  # an older event: does it speak over the cause on file?
    merged = combine(on_file, new, set_at=set_at)
    if merged is on_file:
        return merged
    db.execute(_SUPPRESSIONS.sql, _SUPPRESSIONS.values(merged))
    change = change_of(on_file, merged, new.updated_at)
    if change is not None:
        # The ids of what made this change, not those of whichever event set the level.
        record_change(db, merged, change, origin, new.updated_at, ids=(new.feedback_id, new.ses_message_id))
    return merged


def merge_audited(
    db: Db, entries: Sequence[tuple[Suppression, str]], *, actor: str, action: str,
    source: Source = Source.ADMIN, note: str | None = None,
) -> list[Suppression]:  # fmt: skip
    """Merge each entry and audit it with its note: one transaction for a whole import.
    Its history keeps `source` and `note` (where an import came from), else the entry's note."""
    db.lock(sorted({new.address for new, _ in entries}))
    merged = []
    for new, detail in entries:
        merged.append(merge_one(db, new, Origin(source, actor, note or detail)))
        audit(db, new.updated_at, actor, action, new.address, new.klass, detail)
    return merged


def clear_suppressions(db: Db, request: ClearRequest, now: datetime) -> ClearVerdict:
    """Remove the request's entries (one class, or all), unless the clear rules refuse it.

    The rules (relay/clearing.py) are weighed here, in the transaction that clears, on
    the entries and the count of the day's clears as they are now. A clear removes the
    entries (each with a history row keeping what it was, and an audit row) and the
    address's transient-bounce history; a refusal changes nothing. Clears of one
    address, and with a daily limit all clears, take their turn (Db.lock).
    """
    address, klass = request.address, request.klass
    db.lock((address, CLEARS_LOCK) if request.max_per_day is not None else (address,))
    on_file = reads.suppressions_of(db, address, klass)
    rows = reads.suppression_history(db, address)
    before = reads.clears_since(db, now - LIMIT_SPAN) if request.max_per_day is not None else 0
    verdict = judge(request, on_file, rows, before)
    if not verdict.cleared:
        return verdict
    # A manual clear also forgets the transient bounces before it, so the
    # next soft bounce does not escalate on history the admin just forgave.
    db.execute("DELETE FROM transient_bounces WHERE address = ?", (address,))
    origin = Origin(Source.ADMIN, request.actor, request.note)
    for entry in verdict.cleared:
        db.execute("DELETE FROM suppressions WHERE address = ? AND class = ?", (address, entry.klass))
        window = window_of(entry, current(rows, entry.klass))
        seconds = None if window is None else round(window.total_seconds())
        record_change(db, entry, Change.CLEARED, origin, now, window_seconds=seconds)
        note = f"{request.note} (was {entry.level} {entry.cause}: {entry.reason})"
        audit(db, now, request.actor, "clear", address, entry.klass, note)
    return verdict


_HISTORY_INSERT = insert(
    "suppression_history",
    ("address", "klass", "at", "change", "source", "actor", "level", "cause", "reason", "expires_at",
     "note", "event_id", "feedback_id", "ses_message_id", "refused_count", "last_refused_at",
     "window_seconds"),
)  # fmt: skip


def record_change(
    db: Db, entry: Suppression, change: Change, origin: Origin, at: datetime, *,
    ids: tuple[str | None, str | None] | None = None, window_seconds: int | None = None,
) -> None:  # fmt: skip
    """One row of an entry's history: `entry` as the change left it (a cleared one as it was).
    `ids`: the SES feedback and message ids behind the change (default: the entry's own)."""
    feedback_id, ses_message_id = ids if ids is not None else (entry.feedback_id, entry.ses_message_id)
    db.execute(
        _HISTORY_INSERT,
        (
            entry.address, entry.klass, to_text(at), str(change), str(origin.source), origin.actor,
            int(entry.level), str(entry.cause), entry.reason, stored(entry.expires_at), origin.note,
            origin.event_id, feedback_id, ses_message_id, entry.refused_count,
            stored(entry.last_refused_at), window_seconds,
        ),
    )  # fmt: skip


def set_class_paused(
    db: Db, klass: str, paused: bool, *, reason: str, actor: str, now: datetime
) -> ClassState:
    """Pause or resume a class (audited)."""
    db.execute(
        "INSERT INTO class_state (class, paused, reason, changed_at, changed_by) VALUES (?,?,?,?,?) "
        "ON CONFLICT (class) DO UPDATE SET paused = excluded.paused, reason = excluded.reason, "
        "changed_at = excluded.changed_at, changed_by = excluded.changed_by",
        (klass, paused, reason, to_text(now), actor),
    )
    audit(db, now, actor, "pause" if paused else "resume", None, klass, reason)
    return ClassState(paused, reason, now, actor)


def audit(
    db: Db, at: datetime, actor: str, action: str, address: str | None, klass: str | None, detail: str
) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, address, class, detail) VALUES (?,?,?,?,?,?)",
        (to_text(at), actor, action, address, klass, detail),
    )


# -- feedback ------------------------------------------------------------------

EVENTS_TABLE = _Table(
    "events", EventRecord, ("received_at",), " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
)
UNMATCHED_TABLE = _Table(
    "unmatched_events", UnmatchedEvent, ("received_at",), " ON CONFLICT (event_id) DO NOTHING"
)
