"""Writes only a shared state has: several hosts take turns at work that must be done once.

Plain functions of a `Db`, as in writes.py, in PostgreSQL's SQL (row locks that skip
what another host holds): the store runs them on the shared state's backend only.

Notices: a host claims due notices with a lease (`lease_owner`, `lease_until`), so
that each is delivered by one host at a time; settling one ends its lease, and the
lease of a host that died runs out, after which another host claims the notice. A
host settles only a notice it still holds: once another has claimed it, that one's
outcome stands.

Hosts: each relay's worker beats once a second (`hosts.last_seen`, by the database's
clock, so that the hosts' own clocks need not agree) and says whether it has mail to
send; the relays sending at once split the account's send rate between them.
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
    db: Db, notice_id: int, state: str, *, owner: str, now: datetime, error: str | None,
    next_attempt_at: datetime | None,
) -> bool:  # fmt: skip
    """writes.settle_notice and the end of the notice's lease, if `owner` still holds it.

    False (and nothing written) when another host has claimed the notice since: `owner`
    took longer than its lease, and the notice's outcome is the newer holder's to record.
    A lease that ran out but that nobody took over still counts: what `owner` did with
    the notice is all that happened to it.
    """
    held = db.fetchone(
        "SELECT id FROM notices WHERE id = ? AND lease_owner = ? FOR UPDATE", (notice_id, owner)
    )
    if held is None:
        return False
    writes.settle_notice(db, notice_id, state, now=now, error=error, next_attempt_at=next_attempt_at)
    db.execute("UPDATE notices SET lease_owner = NULL, lease_until = NULL WHERE id = ?", (notice_id,))
    return True


# -- hosts ---------------------------------------------------------------------------

HOST_LIVE = timedelta(seconds=5)  # a host not heard from for this long is gone (its share is free)


def heartbeat(
    db: Db, host_id: str, *, hostname: str, data_dir: str, started_at: datetime, sending: bool,
    live: timedelta = HOST_LIVE,
) -> int:  # fmt: skip
    """Record that `host_id` is alive (and sending or not); the number of *other* hosts
    heard from within `live` that are sending."""
    db.execute(
        "INSERT INTO hosts (host_id, hostname, data_dir, started_at, last_seen, sending) "
        "VALUES (?, ?, ?, ?, clock_timestamp(), ?) ON CONFLICT (host_id) DO UPDATE SET "
        "hostname = excluded.hostname, data_dir = excluded.data_dir, started_at = excluded.started_at, "
        "last_seen = excluded.last_seen, sending = excluded.sending",
        (host_id, hostname, data_dir, to_text(started_at), sending),
    )
    row = db.fetchone(
        "SELECT count(*) AS n FROM hosts WHERE host_id <> ? AND sending "
        "AND last_seen > clock_timestamp() - make_interval(secs => ?)",
        (host_id, live.total_seconds()),
    )
    return 0 if row is None else int(row["n"])
