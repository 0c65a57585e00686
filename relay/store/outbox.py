"""The outbox: what this host committed locally and the shared state has yet to hear.

With a shared state the intake's accept, the sender's outcome and the refusal counts
commit to the local file first (the intake's commit is the promise behind a 250, and
must not wait on the network), each with an `outbox` row in the same transaction.
The shipper (relay/ops/shipper.py) then applies the rows to PostgreSQL in their
order, a batch per transaction, and deletes them here once that transaction has
committed. A crash between the two ships the batch again, which changes nothing:

- accepts and outcomes go through spool_writes' idempotent appliers (rows keyed
  naturally and inserted once, statuses that only move on from `queued`, notices
  deduplicated by key, held events matched once);
- refusal counts are deltas, so each row that carries some is claimed first in
  `outbox_shipped` by (host id, outbox id), and counted only when the claim is new.

Outbox ids never repeat (AUTOINCREMENT) and are drawn in commit order (one writer),
so everything below a batch's first id was deleted here before the batch was read:
the claims of those rows can go, in the transaction that ships the batch.

Rows carry their records as JSON; the functions below that encode and decode them
are pure. The local writes run on the local backend, `ship` on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from relay.store import spool_writes
from relay.store.backend import Db
from relay.store.records import NewRecipient, NewSubmission, NoticeRecord, StateProbe, StoreError
from relay.store.spool_writes import Accept, Outcome, Refusal
from relay.timeutil import from_text, id_floor, to_text

ACCEPT = "accept"
OUTCOME = "outcome"
REFUSALS = "refusals"
KINDS = (ACCEPT, OUTCOME, REFUSALS)
SHIP_ROWS = 256  # outbox rows read for one batch
SHIP_ADDRESSES = 500  # addresses one batch locks in PostgreSQL at most (its lock table is finite)

_INSERT = "INSERT INTO outbox (kind, submission_id, body, created_at) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    submission_id: str | None
    body: str
    created_at: float  # epoch seconds of the local commit


@dataclass(frozen=True)
class Shipped:
    """What one shipping round did: rows applied to the shared state, and whether more wait."""

    rows: int
    more: bool


# -- encoding (pure) ---------------------------------------------------------------------


def _notice(n: NoticeRecord) -> dict[str, Any]:
    return {
        "dedupe_key": n.dedupe_key, "reason": n.reason, "recipient": n.recipient, "sender": n.sender,
        "submission_id": n.submission_id, "ses_message_id": n.ses_message_id, "extra": n.extra,
        "klass": n.klass, "status": n.status, "diagnostic": n.diagnostic, "bounce_type": n.bounce_type,
        "bounce_subtype": n.bounce_subtype,
    }  # fmt: skip


def encode_accept(item: Accept) -> str:
    """An accept without its message bytes (the shared state never holds those)."""
    s = item.sub
    doc = {
        "id": s.id, "mail_from": s.mail_from, "klass": s.klass, "class_source": s.class_source,
        "configuration_set": s.configuration_set, "tags": [list(t) for t in s.tags],
        "header_from": s.header_from, "subject": s.subject, "message_id": s.message_id,
        "headers": s.headers, "size": s.size, "client_ip": s.client_ip, "auth_user": s.auth_user,
        "created_at": to_text(s.created_at),
        "recipients": [[r.address, str(r.status), r.detail] for r in s.recipients],
        "refused": [list(r) for r in s.refused],
        "notices": [_notice(n) for n in item.notices],
    }  # fmt: skip
    return json.dumps(doc)


def encode_outcome(o: Outcome) -> str:
    doc = {
        "submission_id": o.submission_id, "addresses": list(o.addresses), "status": o.status,
        "now": to_text(o.now), "ses_message_id": o.ses_message_id, "detail": o.detail,
        "notices": [_notice(n) for n in o.notices],
    }  # fmt: skip
    return json.dumps(doc)


def encode_refusals(refusals: Sequence[Refusal]) -> str:
    return json.dumps([list(r) for r in refusals])


def decode_accept(body: str) -> Accept:
    d = json.loads(body)
    sub = NewSubmission(
        id=d["id"], mail_from=d["mail_from"], klass=d["klass"], class_source=d["class_source"],
        configuration_set=d["configuration_set"], tags=tuple((str(n), str(v)) for n, v in d["tags"]),
        header_from=d["header_from"], subject=d["subject"], message_id=d["message_id"],
        headers=d["headers"], size=int(d["size"]), client_ip=d["client_ip"], auth_user=d["auth_user"],
        created_at=from_text(d["created_at"]),
        recipients=tuple(NewRecipient(a, s, detail) for a, s, detail in d["recipients"]),
        refused=tuple((str(a), str(k)) for a, k in d["refused"]),
    )  # fmt: skip
    notices = tuple(NoticeRecord(**n) for n in d["notices"])
    return Accept(sub, b"", sub.created_at.timestamp(), notices)


def decode_outcome(body: str) -> Outcome:
    d = json.loads(body)
    return Outcome(
        d["submission_id"], tuple(d["addresses"]), d["status"], from_text(d["now"]), d["ses_message_id"],
        d["detail"], tuple(NoticeRecord(**n) for n in d["notices"]),
    )  # fmt: skip


def decode_refusals(body: str) -> list[Refusal]:
    return [(str(at), str(address), str(klass)) for at, address, klass in json.loads(body)]


@dataclass(frozen=True)
class Decoded:
    """An outbox row as the shipper applies it: the record, and the refusal counts it carries."""

    row: OutboxRow
    record: Accept | Outcome | None  # None: a row of refusal counts only
    refusals: tuple[Refusal, ...]

    @property
    def addresses(self) -> Iterable[str]:
        """The addresses whose rows applying this touches under an address lock."""
        if isinstance(self.record, Outcome):
            yield from self.record.addresses
        for _, address, _ in self.refusals:
            yield address


def decode(row: OutboxRow) -> Decoded:
    """A row's record; an accept's refusals are taken out of it, to be counted once."""
    if row.kind == ACCEPT:
        item = decode_accept(row.body)
        created = to_text(item.sub.created_at)
        refusals = tuple((created, address, klass) for address, klass in item.sub.refused)
        return Decoded(row, replace(item, sub=replace(item.sub, refused=())), refusals)
    if row.kind == OUTCOME:
        return Decoded(row, decode_outcome(row.body), ())
    if row.kind == REFUSALS:
        return Decoded(row, None, tuple(decode_refusals(row.body)))
    raise ValueError(f"outbox row {row.id}: unknown kind {row.kind!r}")


def batch(rows: Sequence[OutboxRow], max_addresses: int = SHIP_ADDRESSES) -> list[Decoded]:
    """The leading rows to ship together: in order, at least one, at most `max_addresses` locked.

    A row that cannot be read ends the batch before it, so that what precedes it ships;
    alone, it is an error (StoreError): it waits, never skipped.
    """
    taken: list[Decoded] = []
    locked = 0
    for row in rows:
        try:
            decoded = decode(row)
        except (ValueError, KeyError, TypeError) as exc:
            if taken:
                break
            raise StoreError(f"outbox row {row.id} ({row.kind}) cannot be read: {exc!r}") from exc
        count = len(set(decoded.addresses))
        if taken and locked + count > max_addresses:
            break
        taken.append(decoded)
        locked += count
    return taken


def refusal_totals(refusals: Iterable[Refusal]) -> list[tuple[int, str, str, str]]:
    """(count, latest time, address, class) per suppression, in key order (the update order)."""
    totals: dict[tuple[str, str], tuple[int, str]] = {}
    for at, address, klass in refusals:
        count, latest = totals.get((address, klass), (0, at))
        totals[(address, klass)] = (count + 1, max(latest, at))
    return [(count, latest, address, klass) for (address, klass), (count, latest) in sorted(totals.items())]


def with_backlog(found: StateProbe, backlog: tuple[int, float | None] | None, now: float) -> StateProbe:
    """A state check's findings with this data dir's outbox (`backlog`: None without a spool here)."""
    if backlog is None:
        return found
    rows, oldest = backlog
    age = round(max(0.0, now - oldest), 1) if rows and oldest is not None else 0.0
    return replace(found, outbox_backlog=rows, outbox_oldest_age_seconds=age)


# -- local writes and reads (the data dir's file) ----------------------------------------


def accept_local(db: Db, items: Sequence[Accept]) -> None:
    """An accept with a shared state: the spool's copy, and its outbox row, in one transaction."""
    spool_writes.accept_spool(db, items)
    db.executemany(_INSERT, [(ACCEPT, i.sub.id, encode_accept(i), i.now_epoch) for i in items])


def record_outcomes_local(db: Db, outcomes: Sequence[Outcome]) -> None:
    """An SES call's outcome with a shared state: the sender's copy and the spool row, and the outbox row."""
    spool_writes.record_outcomes_spool(db, outcomes)
    db.executemany(
        _INSERT, [(OUTCOME, o.submission_id, encode_outcome(o), o.now.timestamp()) for o in outcomes]
    )


def note_refusals_local(db: Db, refusals: Sequence[Refusal]) -> None:
    """Refusal counts with a shared state: one outbox row for all of a commit's."""
    if refusals:
        latest = max(from_text(at) for at, _, _ in refusals)
        db.execute(_INSERT, (REFUSALS, None, encode_refusals(refusals), latest.timestamp()))


def pending(db: Db, limit: int) -> list[OutboxRow]:
    """The oldest `limit` rows, in commit order."""
    rows = db.fetchall(
        "SELECT id, kind, submission_id, body, created_at FROM outbox ORDER BY id LIMIT ?", (limit,)
    )
    return [OutboxRow(r["id"], r["kind"], r["submission_id"], r["body"], r["created_at"]) for r in rows]


def forget(db: Db, first: int, last: int) -> int:
    """Delete rows the shared state has applied (a batch: every id from `first` to `last`)."""
    return db.execute("DELETE FROM outbox WHERE id >= ? AND id <= ?", (first, last))


def backlog(db: Db) -> tuple[int, float | None]:
    """(rows waiting, epoch time of the oldest)."""
    row = db.fetchone("SELECT count(*) AS n, min(created_at) AS oldest FROM outbox")
    return (0, None) if row is None else (int(row["n"]), row["oldest"])


def prune_shipped(db: Db, before: datetime, limit: int) -> int:
    """Delete up to `limit` local submissions the shared state keeps, with their recipients.

    A submission goes once its message bytes are gone (nothing left to send), no
    outbox row of it waits, and none of its recipients changed since `before`
    (the most recent sends stay, for `last_sent_at`). Ids begin with their time, so
    the scan is bounded to those created before `before`.
    """
    stamp = to_text(before)
    doomed = [
        r["id"]
        for r in db.fetchall(
            "SELECT s.id FROM submissions s WHERE s.id < ? "
            "AND NOT EXISTS (SELECT 1 FROM spool p WHERE p.submission_id = s.id) "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.submission_id = s.id) "
            "AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.submission_id = s.id AND r.updated_at >= ?) "
            "ORDER BY s.id LIMIT ?",
            (id_floor(before), stamp, limit),
        )
    ]
    if doomed:
        keys = [(sid,) for sid in doomed]
        db.executemany("DELETE FROM recipients WHERE submission_id = ?", keys)
        db.executemany("DELETE FROM submissions WHERE id = ?", keys)
    return len(doomed)


# -- the shared state (PostgreSQL) ---------------------------------------------------------


def ship(db: Db, host_id: str, rows: Sequence[Decoded]) -> None:
    """Apply a batch of this host's outbox rows, in their order, in one transaction.

    Every address the batch updates under is locked first, all at once (the feedback
    transaction does the same, so neither waits on the other in a circle); refusal
    counts are claimed by (host id, outbox id) and counted only when the claim is new.
    """
    if not rows:
        return
    db.lock(address for d in rows for address in d.addresses)
    counting = [d.row.id for d in rows if d.refusals]
    claimed: set[int] = set()
    if counting:
        claimed = {
            int(r["outbox_id"])
            for r in db.fetchall(
                "INSERT INTO outbox_shipped (host_id, outbox_id) SELECT ?, unnest(?::bigint[]) "
                "ON CONFLICT DO NOTHING RETURNING outbox_id",
                (host_id, counting),
            )
        }
    db.execute("DELETE FROM outbox_shipped WHERE host_id = ? AND outbox_id < ?", (host_id, rows[0].row.id))
    for kind, records in _runs(rows):
        if kind == ACCEPT:
            spool_writes.accept_shared(db, records)
        elif kind == OUTCOME:
            spool_writes.record_outcomes_shared(db, records)
    counted = refusal_totals(r for d in rows if d.row.id in claimed for r in d.refusals)
    db.executemany(
        "UPDATE suppressions SET refused_count = refused_count + ?, "
        "last_refused_at = greatest(last_refused_at, ?::timestamptz) WHERE address = ? AND class = ?",
        counted,
    )


def _runs(rows: Sequence[Decoded]) -> list[tuple[str, list[Any]]]:
    """Consecutive records of one kind, together: one applier call each, in the rows' order."""
    runs: list[tuple[str, list[Any]]] = []
    for d in rows:
        if d.record is None:
            continue
        if runs and runs[-1][0] == d.row.kind:
            runs[-1][1].append(d.record)
        else:
            runs.append((d.row.kind, [d.record]))
    return runs
