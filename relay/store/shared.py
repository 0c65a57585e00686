"""Writes only a shared state has: several hosts take turns at work that must be done once.

Plain functions of a `Db`, as in writes.py, in PostgreSQL's SQL (row locks that skip
what another host holds): the store runs them on the shared state's backend only.

Notices: a host claims due notices with a lease (`lease_owner`, `lease_until`), so
that each is delivered by one host at a time; settling one ends its lease, and the
lease of a host that died runs out, after which another host claims the notice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from relay.store import reads, writes
from relay.store.backend import Db, marks
from relay.store.records import NoticeRow
from relay.timeutil import to_text

NOTICE_LEASE = timedelta(minutes=5)  # longer than any delivery attempt takes (SMTP timeouts included)


def claim_notices(
    db: Db, owner: str, now: datetime, limit: int, lease: timedelta = NOTICE_LEASE
) -> list[NoticeRow]:
    """Lease up to `limit` due notices to `owner` until now + lease; the notices leased.

    Rows another host is claiming at the same moment are skipped, not waited for; a
    lease that ran out (its owner died mid-delivery) no longer protects its notice.
    """
    stamp = to_text(now)
    claimed = db.fetchall(
        "UPDATE notices SET lease_owner = ?, lease_until = ? WHERE id IN ("
        "SELECT id FROM notices WHERE state = 'pending' AND next_attempt_at <= ? "
        "AND (lease_until IS NULL OR lease_until <= ?) "
        "ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id",
        (owner, to_text(now + lease), stamp, stamp, limit),
    )
    ids = [int(row["id"]) for row in claimed]
    if not ids:
        return []
    rows = db.fetchall(
        f"{reads.NOTICE_SELECT} WHERE n.id IN ({marks(len(ids))}) ORDER BY n.next_attempt_at, n.id",
        ids,
    )
    return [reads.notice_row(r) for r in rows]


def settle_notice(
    db: Db, notice_id: int, state: str, *, now: datetime, error: str | None, next_attempt_at: datetime | None
) -> None:
    """writes.settle_notice, and the end of the notice's lease."""
    writes.settle_notice(db, notice_id, state, now=now, error=error, next_attempt_at=next_attempt_at)
    db.execute("UPDATE notices SET lease_owner = NULL, lease_until = NULL WHERE id = ?", (notice_id,))
