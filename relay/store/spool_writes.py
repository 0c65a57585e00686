"""The intake's and the sender's writes, group-committed: accept a submission, record an
SES call's outcome, and the spool's own bookkeeping.

With one host, `accept` and `record_outcomes` write the spool and the record in one
transaction. With a shared state each comes in two halves: `*_shared` for the shared
state (idempotent: applying one twice adds no row and moves no status back, only the
refusal counts would count again) and `*_spool` for this host's file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from relay.store.backend import Db
from relay.store.records import NewSubmission, NoticeRecord
from relay.store.writes import NOTICES, add_notices, insert, match_unmatched, notice_values
from relay.timeutil import to_text
from relay.vocabulary import Status


@dataclass(frozen=True)
class Accept:
    """A submission the intake accepted, with its message bytes and the notices it owes."""

    sub: NewSubmission
    data: bytes
    now_epoch: float
    notices: tuple[NoticeRecord, ...]


@dataclass(frozen=True)
class Outcome:
    """What an SES call did for some queued recipients of a submission."""

    submission_id: str
    addresses: tuple[str, ...]
    status: str
    now: datetime
    ses_message_id: str | None
    detail: str | None
    notices: tuple[NoticeRecord, ...]


Refusal = tuple[str, str, str]  # (time as stored, address, class) of a suppression that refused one

_SUBMISSION_INSERT = insert(
    "submissions",
    ("id", "mail_from", "klass", "class_source", "configuration_set", "tags", "header_from", "subject",
     "message_id", "headers", "size", "client_ip", "auth_user", "created_at"),
)  # fmt: skip
_RECIPIENT_INSERT = insert(
    "recipients", ("submission_id", "address", "status", "detail", "updated_at", "ordinal")
)
_NOTHING_ON_CONFLICT = " ON CONFLICT DO NOTHING"
_SPOOL_INSERT = insert("spool", ("submission_id", "data", "next_attempt_at", "created_at"))


@dataclass
class _AcceptRows:
    """The rows of some accepted submissions, table by table."""

    submissions: list[tuple[object, ...]] = field(default_factory=list)
    recipients: list[tuple[object, ...]] = field(default_factory=list)
    spool: list[tuple[object, ...]] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notices: list[list[object]] = field(default_factory=list)


def _accept_rows(items: Sequence[Accept]) -> _AcceptRows:
    rows = _AcceptRows()
    for item in items:
        sub = item.sub
        created = to_text(sub.created_at)
        rows.submissions.append(
            (
                sub.id, sub.mail_from, sub.klass, sub.class_source, sub.configuration_set,
                json.dumps([list(t) for t in sub.tags]), sub.header_from, sub.subject, sub.message_id,
                sub.headers, sub.size, sub.client_ip, sub.auth_user, created,
            )
        )  # fmt: skip
        rows.recipients.extend(
            (sub.id, r.address, r.status, r.detail, created, i) for i, r in enumerate(sub.recipients)
        )
        if any(r.status == Status.QUEUED for r in sub.recipients):
            rows.spool.append((sub.id, item.data, item.now_epoch, item.now_epoch))
        rows.refusals.extend((created, address, klass) for address, klass in sub.refused)
        rows.notices.extend(notice_values(n, sub.created_at) for n in item.notices)
    return rows


def accept(db: Db, items: Sequence[Accept]) -> None:
    """Record submissions, their recipients and message bytes: a few multi-row inserts for many.

    One host (SQLite): the spool and the record in one transaction.
    """
    rows = _accept_rows(items)
    db.executemany(_SUBMISSION_INSERT, rows.submissions)
    db.executemany(_RECIPIENT_INSERT, rows.recipients)
    db.executemany(_SPOOL_INSERT, rows.spool)
    count_refusals(db, rows.refusals)
    db.executemany(NOTICES.sql, rows.notices)


def accept_spool(db: Db, items: Sequence[Accept]) -> None:
    """The local half of an accept with a shared state: what the sender needs (submission,
    recipients, message bytes)."""
    rows = _accept_rows(items)
    db.executemany(_SUBMISSION_INSERT, rows.submissions)
    db.executemany(_RECIPIENT_INSERT, rows.recipients)
    db.executemany(_SPOOL_INSERT, rows.spool)


def accept_shared(db: Db, items: Sequence[Accept]) -> None:
    """The shared half: submission, recipients, the notices owed and the refusal counts.

    Applying it twice adds no row (the keys are natural); only the refusal counts
    would count again.
    """
    rows = _accept_rows(items)
    db.executemany(_SUBMISSION_INSERT + _NOTHING_ON_CONFLICT, rows.submissions)
    db.executemany(_RECIPIENT_INSERT + _NOTHING_ON_CONFLICT, rows.recipients)
    count_refusals(db, rows.refusals)
    db.executemany(NOTICES.sql, rows.notices)


def count_refusals(db: Db, refusals: Sequence[Refusal]) -> None:
    """Count refusals against the suppressions that caused them ("is it still saving us?")."""
    db.executemany(
        "UPDATE suppressions SET refused_count = refused_count + 1, last_refused_at = ? "
        "WHERE address = ? AND class = ?",
        refusals,
    )


def record_outcomes(db: Db, outcomes: Sequence[Outcome]) -> None:
    """Settle queued recipients after SES calls, with the notices owed and the spool row once done.

    Only `queued` rows change, so a retry path can never overwrite an earlier outcome.
    Events that arrived before the SES message id was recorded are applied here.
    One host (SQLite): the spool and the record in one transaction.
    """
    for o in outcomes:
        _settle(db, o)
        if o.ses_message_id is not None:
            match_unmatched(db, o.submission_id, o.ses_message_id, o.now)
        add_notices(db, o.notices, o.now)
        finish(db, o.submission_id)


def record_outcomes_spool(db: Db, outcomes: Sequence[Outcome]) -> None:
    """The local half with a shared state: the sender's copy of the statuses, and the spool row."""
    for o in outcomes:
        _settle(db, o)
        finish(db, o.submission_id)


def record_outcomes_shared(db: Db, outcomes: Sequence[Outcome]) -> None:
    """The shared half: statuses, SES message ids, held events matched, notices owed.

    Locks the recipients' addresses first, as the feedback transaction does, so that an
    event applied on another host at the same moment is either matched here or finds
    the SES message id itself. Applying it twice changes nothing more.
    """
    db.lock(address for o in outcomes for address in o.addresses)
    for o in outcomes:
        _settle(db, o)
        if o.ses_message_id is not None:
            match_unmatched(db, o.submission_id, o.ses_message_id, o.now)
        add_notices(db, o.notices, o.now)


def _settle(db: Db, o: Outcome) -> None:
    stamp = to_text(o.now)
    db.executemany(
        "UPDATE recipients SET status = ?, ses_message_id = coalesce(?, ses_message_id), "
        "detail = ?, updated_at = ? WHERE submission_id = ? AND address = ? AND status = 'queued'",
        [(o.status, o.ses_message_id, o.detail, stamp, o.submission_id, a) for a in o.addresses],
    )


def finish(db: Db, submission_id: str) -> None:
    """Drop the message bytes once no recipient is left queued."""
    db.execute(
        "DELETE FROM spool WHERE submission_id = ? AND NOT EXISTS ("
        "SELECT 1 FROM recipients WHERE submission_id = ? AND status = 'queued')",
        (submission_id, submission_id),
    )


def defer(db: Db, submission_id: str, next_attempt_at: float, error: str) -> None:
    db.execute(
        "UPDATE spool SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
        "WHERE submission_id = ?",
        (next_attempt_at, error, submission_id),
    )


def make_all_due(db: Db) -> int:
    return db.execute("UPDATE spool SET next_attempt_at = 0")
