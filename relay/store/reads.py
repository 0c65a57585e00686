"""Every read of the store, as a plain function of a connection (`Db`).

The SQL is the text both backends run (see relay/store/backend.py). A record's
fields and its table's columns share their names (`klass` is kept in `class`), so
`decode` builds a record from a row by its type hints: times from stored text (or a
driver's datetime), enums and flags from their stored values.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from relay.store.backend import Db, Row, marks
from relay.store.records import (
    AuditRow,
    ClassState,
    DeadLetter,
    EventRecord,
    LoggedEvent,
    NoticeRecord,
    NoticeRow,
    RecipientContext,
    RecipientRow,
    ReviewItem,
    SpoolItem,
    SubmissionRow,
)
from relay.suppression import Level, Suppression
from relay.suppression_history import Cleared, HistoryRow
from relay.timeutil import from_text, id_floor, maybe_text, maybe_time, to_text
from relay.vocabulary import Status

R = TypeVar("R")


def column(field: str) -> str:
    """The column that keeps a record's field: `klass` is `class`, the others keep their names."""
    return "class" if field == "klass" else field


@functools.cache
def _decoders(cls: type) -> tuple[tuple[str, str, Callable[[Any], Any] | None], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        convert: Callable[[Any], Any] | None = None
        if hint is datetime:
            convert = from_text
        elif hint == datetime | None:
            convert = maybe_time
        elif hint is bool:
            convert = bool
        elif isinstance(hint, type) and issubclass(hint, Enum):
            convert = hint
        out.append((f.name, column(f.name), convert))
    return tuple(out)


def decode(cls: type[R], row: Row, **given: Any) -> R:
    """A `cls` record from `row`; fields in `given` are taken as they are, not from the row."""
    values = dict(given)
    for name, col, convert in _decoders(cls):
        if name not in values:
            raw = row[col]
            values[name] = raw if convert is None else convert(raw)
    return cls(**values)


# -- suppressions ------------------------------------------------------------


def suppressions_for(db: Db, addresses: Sequence[str], now: datetime) -> dict[str, list[Suppression]]:
    """Unexpired suppressions of each address (given without repeats), in every class."""
    out: dict[str, list[Suppression]] = {a: [] for a in addresses}
    if not addresses:
        return out
    rows = db.fetchall(
        f"SELECT * FROM suppressions WHERE address IN ({marks(len(addresses))}) "  # noqa: S608 - placeholders only
        "AND (expires_at IS NULL OR expires_at > ?)",
        [*addresses, to_text(now)],
    )
    for row in rows:
        out[row["address"]].append(decode(Suppression, row))
    return out


def suppression(db: Db, address: str, klass: str) -> Suppression | None:
    row = db.fetchone("SELECT * FROM suppressions WHERE address = ? AND class = ?", (address, klass))
    return None if row is None else decode(Suppression, row)


def cause_set_at(db: Db, entry: Suppression) -> datetime | None:
    """When the SES event behind an entry's cause happened (its feedback id, for its
    address); None when no logged event is (an admin's entry, or one without an id)."""
    if entry.feedback_id is None:
        return None
    row = db.fetchone(
        "SELECT max(occurred_at) AS at FROM events WHERE recipient = ? AND feedback_id = ?",
        (entry.address, entry.feedback_id),
    )
    return None if row is None else maybe_time(row["at"])


def suppressions_of(db: Db, address: str, klass: str | None = None) -> list[Suppression]:
    """The entries of an address (of one class when given), expired ones included."""
    sql, params = "SELECT * FROM suppressions WHERE address = ?", [address]
    if klass is not None:
        sql += " AND class = ?"
        params.append(klass)
    return [decode(Suppression, r) for r in db.fetchall(sql + " ORDER BY class", params)]


def list_suppressions(
    db: Db, *, now: datetime, klass: str | None, level: Level | None, include_expired: bool
) -> list[Suppression]:
    clauses, params = _where(
        ("(expires_at IS NULL OR expires_at > ?)", None if include_expired else to_text(now)),
        ("class = ?", klass),
        ("level = ?", None if level is None else int(level)),
    )
    rows = db.fetchall(f"SELECT * FROM suppressions {clauses} ORDER BY address, class", params)  # noqa: S608
    return [decode(Suppression, r) for r in rows]


def suppression_counts(db: Db, now: datetime) -> dict[Level, int]:
    rows = db.fetchall(
        "SELECT level, count(*) AS n FROM suppressions WHERE expires_at IS NULL OR expires_at > ? "
        "GROUP BY level",
        [to_text(now)],
    )
    return {Level(int(r["level"])): int(r["n"]) for r in rows}


def suppression_history(db: Db, address: str) -> list[HistoryRow]:
    """Every recorded change of the address's entries, in every class, oldest first."""
    rows = db.fetchall("SELECT * FROM suppression_history WHERE address = ? ORDER BY id", (address,))
    return [decode(HistoryRow, r) for r in rows]


def clears_since(db: Db, since: datetime) -> int:
    """Entries cleared by hand since a time, by every admin (the daily limit on clears)."""
    row = db.fetchone(
        "SELECT count(*) AS n FROM suppression_history WHERE change = 'cleared' AND at >= ?",
        (to_text(since),),
    )
    return 0 if row is None else int(row["n"])


def recent_clears(db: Db, address: str, since: datetime) -> tuple[Cleared, ...]:
    """The address's bounce entries cleared by hand since a time, oldest first (the policy's
    "bounced again after a clear")."""
    rows = db.fetchall(
        "SELECT at, level, window_seconds, expires_at FROM suppression_history "
        "WHERE address = ? AND change = 'cleared' AND cause = 'bounce' AND at >= ? ORDER BY id",
        (address, to_text(since)),
    )
    return tuple(
        Cleared(
            at=from_text(r["at"]),
            level=Level(int(r["level"])),
            window=None if r["expires_at"] is None else timedelta(seconds=int(r["window_seconds"] or 0)),
        )
        for r in rows
    )


def _where(*conditions: tuple[str, object]) -> tuple[str, list[object]]:
    """A WHERE clause of the conditions whose value is not None, and its parameters."""
    kept = [(sql, value) for sql, value in conditions if value is not None]
    if not kept:
        return "", []
    return "WHERE " + " AND ".join(sql for sql, _ in kept), [value for _, value in kept]


# -- feedback: events, review, dead letters, audit -------------------------------


def events(db: Db, *, address: str | None, since: datetime | None, limit: int) -> list[LoggedEvent]:
    clauses, params = _where(("recipient = ?", address), ("occurred_at >= ?", maybe_text(since)))
    sql = f"SELECT * FROM events {clauses} ORDER BY occurred_at, id LIMIT ?"  # noqa: S608
    rows = db.fetchall(sql, [*params, limit])
    return [_logged_event(r) for r in rows]


def report_events(db: Db, since: datetime, until: datetime) -> list[LoggedEvent]:
    """Bounces and complaints that occurred in [since, until), oldest first."""
    rows = db.fetchall(
        "SELECT * FROM events WHERE kind IN ('bounce', 'complaint') AND occurred_at >= ? "
        "AND occurred_at < ? ORDER BY occurred_at, id",
        [to_text(since), to_text(until)],
    )
    return [_logged_event(r) for r in rows]


def _logged_event(row: Row) -> LoggedEvent:
    return decode(LoggedEvent, row, record=decode(EventRecord, row))


def recipient_context(db: Db, ses_message_id: str, address: str | None) -> RecipientContext | None:
    """The submission this relay sent `ses_message_id` for (to `address` when given)."""
    sql = (
        "SELECT r.status, s.id AS submission_id, s.class, s.mail_from "
        "FROM recipients r JOIN submissions s ON s.id = r.submission_id WHERE r.ses_message_id = ?"
    )
    params: list[object] = [ses_message_id]
    if address is not None:
        sql += " AND r.address = ?"
        params.append(address)
    row = db.fetchone(sql + " LIMIT 1", params)
    return None if row is None else decode(RecipientContext, row)


def recipient_contexts(db: Db, ses_message_ids: Sequence[str]) -> dict[tuple[str, str], RecipientContext]:
    """recipient_context of every recipient of these SES message ids at once, by
    (SES message id, address)."""
    if not ses_message_ids:
        return {}
    sql = (
        "SELECT r.ses_message_id, r.address, r.status, s.id AS submission_id, s.class, s.mail_from "  # noqa: S608
        f"FROM recipients r JOIN submissions s ON s.id = r.submission_id WHERE r.ses_message_id IN "
        f"({marks(len(ses_message_ids))})"
    )
    rows = db.fetchall(sql, list(ses_message_ids))
    found: dict[tuple[str, str], RecipientContext] = {}
    for row in rows:
        found.setdefault((row["ses_message_id"], row["address"]), decode(RecipientContext, row))
    return found


def transient_history(db: Db, address: str, since: datetime) -> tuple[datetime, ...]:
    rows = db.fetchall(
        "SELECT at FROM transient_bounces WHERE address = ? AND at >= ? ORDER BY at",
        (address, to_text(since)),
    )
    return tuple(from_text(r["at"]) for r in rows)


def logged_events(
    db: Db,
    address: str,
    kinds: Sequence[str],
    after: datetime,
    before: datetime,
    *,
    transient_only: bool = False,
) -> list[tuple[int, str, str, datetime]]:
    """The address's logged events of `kinds` from between the two times (both excluded),
    oldest first, as (event id, dedupe key, the SES payload, its time); `transient_only`:
    only bounces that counted as transient (their time is in the transient history)."""
    sql = (
        f"SELECT e.id, e.dedupe_key, e.raw, e.occurred_at FROM events e WHERE e.recipient = ? "  # noqa: S608
        f"AND e.kind IN ({marks(len(kinds))}) AND e.occurred_at > ? AND e.occurred_at < ? "
    )
    if transient_only:
        sql += (
            "AND EXISTS (SELECT 1 FROM transient_bounces t "
            "WHERE t.address = e.recipient AND t.at = e.occurred_at) "
        )
    rows = db.fetchall(
        sql + "ORDER BY e.occurred_at, e.id", (address, *kinds, to_text(after), to_text(before))
    )
    return [(int(r["id"]), r["dedupe_key"], r["raw"], from_text(r["occurred_at"])) for r in rows]


def last_engagement(db: Db, address: str, excluding: Collection[int] = ()) -> datetime | None:
    """The time of the address's latest open or click (events_by_recipient serves it), not
    counting the events of ids `excluding`."""
    sql = "SELECT max(occurred_at) AS at FROM events WHERE recipient = ? AND kind IN ('open', 'click')"
    if excluding:
        sql += f" AND id NOT IN ({marks(len(excluding))})"
    row = db.fetchone(sql, (address, *excluding))
    return None if row is None else maybe_time(row["at"])


def dead_letters(db: Db) -> list[DeadLetter]:
    return [decode(DeadLetter, r) for r in db.fetchall("SELECT * FROM dead_letters ORDER BY id")]


def review_items(db: Db) -> list[ReviewItem]:
    return [decode(ReviewItem, r) for r in db.fetchall("SELECT * FROM review ORDER BY id")]


def audit_log(db: Db, address: str | None) -> list[AuditRow]:
    clauses, params = _where(("address = ?", address))
    return [decode(AuditRow, r) for r in db.fetchall(f"SELECT * FROM audit {clauses} ORDER BY id", params)]  # noqa: S608


def outcome_counts(db: Db, since: datetime) -> list[tuple[str | None, str, int]]:
    """(class, measure, count) since a time, for relay.ops.stats.

    Measures: "sent" (recipients SES accepted from this relay, plus Send events of
    messages it did not send), "delivered", "bounced_permanent",
    "bounced_transient", "bounced_undetermined", "complained", "rejected".
    """
    start = to_text(since)
    rows = db.fetchall(
        "SELECT s.class AS class, 'sent' AS measure, count(*) AS n FROM recipients r "
        "JOIN submissions s ON s.id = r.submission_id "
        "WHERE r.ses_message_id IS NOT NULL AND s.created_at >= ? GROUP BY s.class "
        "UNION ALL "
        "SELECT e.class, 'sent', count(*) FROM events e WHERE e.kind = 'send' AND e.occurred_at >= ? "
        "AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.ses_message_id = e.ses_message_id) "
        "GROUP BY e.class "
        "UNION ALL "
        "SELECT class, CASE kind WHEN 'bounce' THEN 'bounced_' || lower(coalesce(bounce_type, "
        "'undetermined')) WHEN 'complaint' THEN 'complained' WHEN 'reject' THEN 'rejected' "
        "ELSE 'delivered' END, count(*) FROM events "
        "WHERE occurred_at >= ? AND kind IN ('delivery', 'bounce', 'complaint', 'reject') "
        "GROUP BY 1, 2",
        [start, start, start],
    )
    return [(r["class"], r["measure"], int(r["n"])) for r in rows]


# -- class pauses and notices ---------------------------------------------------


def class_states(db: Db) -> dict[str, ClassState]:
    return {
        r["class"]: decode(ClassState, r) for r in db.fetchall("SELECT * FROM class_state ORDER BY class")
    }


NOTICE_SELECT = (
    "SELECT n.*, s.headers, s.message_id, s.subject, s.created_at AS sub_created_at "
    "FROM notices n LEFT JOIN submissions s ON s.id = n.submission_id"
)


def due_notices(db: Db, now: datetime, limit: int) -> list[NoticeRow]:
    rows = db.fetchall(
        f"{NOTICE_SELECT} WHERE n.state = 'pending' AND n.next_attempt_at <= ? "
        "ORDER BY n.next_attempt_at, n.id LIMIT ?",
        [to_text(now), limit],
    )
    return [notice_row(r) for r in rows]


def notices(db: Db, *, pending_only: bool, limit: int) -> list[NoticeRow]:
    where = "WHERE n.state = 'pending' " if pending_only else ""
    return [notice_row(r) for r in db.fetchall(f"{NOTICE_SELECT} {where}ORDER BY n.id LIMIT ?", [limit])]


def notice_row(row: Row) -> NoticeRow:
    return decode(
        NoticeRow,
        row,
        record=decode(NoticeRecord, row),
        original_headers=row["headers"] or "",
        original_message_id=row["message_id"],
        original_subject=row["subject"],
        arrival_date=maybe_time(row["sub_created_at"]),
    )


# -- submissions and the spool ----------------------------------------------------


def submission(db: Db, submission_id: str) -> SubmissionRow | None:
    return submissions(db, [submission_id]).get(submission_id)


def submissions(db: Db, ids: Collection[str]) -> dict[str, SubmissionRow]:
    """The submissions of these ids, each with its recipients in envelope order."""
    if not ids:
        return {}
    keys = list(ids)
    recipients: dict[str, list[RecipientRow]] = {}
    for r in db.fetchall(
        f"SELECT * FROM recipients WHERE submission_id IN ({marks(len(keys))}) "  # noqa: S608
        "ORDER BY submission_id, ordinal",
        keys,
    ):
        recipients.setdefault(r["submission_id"], []).append(decode(RecipientRow, r))
    rows = db.fetchall(f"SELECT * FROM submissions WHERE id IN ({marks(len(keys))})", keys)  # noqa: S608
    return {
        row["id"]: decode(
            SubmissionRow,
            row,
            tags=tuple((str(n), str(v)) for n, v in json.loads(row["tags"])),
            recipients=tuple(recipients.get(row["id"], ())),
        )
        for row in rows
    }


def recent_submissions(
    db: Db, since: datetime, *, sender: str | None, status: str | None, limit: int
) -> list[SubmissionRow]:
    """Submissions accepted since `since`, newest first, each with its recipients.

    `sender` is the envelope sender; `status` keeps the submissions that have at
    least one recipient in that status. Ids begin with their time (`new_id`), so
    the primary key both orders the rows and bounds the scan to the window.
    """
    clauses, params = _where(
        ("s.id >= ?", id_floor(since)),
        ("s.created_at >= ?", to_text(since)),
        ("s.mail_from = ?", sender),
        ("EXISTS (SELECT 1 FROM recipients x WHERE x.submission_id = s.id AND x.status = ?)", status),
    )
    sql = f"SELECT s.id FROM submissions s {clauses} ORDER BY s.id DESC LIMIT ?"  # noqa: S608
    ids = [r["id"] for r in db.fetchall(sql, [*params, limit])]
    found = submissions(db, ids)
    return [found[i] for i in ids]


def due(db: Db, now_epoch: float, limit: int, exclude: Iterable[str]) -> list[SpoolItem]:
    """Up to `limit` spooled messages due now, oldest first, not in `exclude`; none of a class
    paused in the `class_state` table beside the spool (with a shared state, its mirror)."""
    skip = list(exclude)
    not_in = f"AND submission_id NOT IN ({marks(len(skip))}) " if skip else ""
    spooled = db.fetchall(
        "SELECT submission_id, data, attempts, created_at FROM spool "  # noqa: S608 - placeholders only
        f"WHERE next_attempt_at <= ? {not_in}"
        "AND NOT EXISTS (SELECT 1 FROM submissions s JOIN class_state c ON c.class = s.class "
        "WHERE s.id = spool.submission_id AND c.paused) "
        "ORDER BY next_attempt_at LIMIT ?",
        [now_epoch, *skip, limit],
    )
    subs = submissions(db, [row["submission_id"] for row in spooled])
    items = []
    for row in spooled:
        sub = subs[row["submission_id"]]
        pending = tuple(r.address for r in sub.recipients if r.status == Status.QUEUED)
        items.append(SpoolItem(sub, bytes(row["data"]), row["attempts"], row["created_at"], pending))
    return items


def next_due(db: Db) -> float | None:
    row = db.fetchone("SELECT min(next_attempt_at) AS due FROM spool")
    return None if row is None else row["due"]


def spool_stats(db: Db) -> tuple[int, float | None]:
    """(messages spooled, epoch time of the oldest)."""
    row = db.fetchone("SELECT count(*) AS n, min(created_at) AS oldest FROM spool")
    return (0, None) if row is None else (int(row["n"]), row["oldest"])


def last_sent_at(db: Db) -> datetime | None:
    """When SES last accepted a message from this relay (any process's sender)."""
    row = db.fetchone("SELECT max(updated_at) AS at FROM recipients WHERE ses_message_id IS NOT NULL")
    return None if row is None else maybe_time(row["at"])


def schema_version(db: Db) -> int:
    row = db.fetchone("SELECT max(version) AS version FROM schema_version")
    return 0 if row is None or row["version"] is None else int(row["version"])
