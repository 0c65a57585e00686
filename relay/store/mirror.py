"""This host's copy of the shared suppressions and class pauses: what its intake checks.

With the state in PostgreSQL, the local SQLite `suppressions` and `class_state` tables
hold a mirror of PostgreSQL's, so that RCPT and DATA are answered by a local point
read and never wait on the network. The functions here are the two halves of keeping
that copy: reads of PostgreSQL (on a psycopg connection of the mirror's own, each in
one REPEATABLE READ snapshot) and writes of the local file (functions of a `Db`, run
in its one write path, the commit thread). relay/ops/state_mirror.py drives them.

- Catching up: PostgreSQL logs every change of a suppression in `suppression_changes`
  under a `seq` that follows commit order (relay/store/pg_schema.py), so the changes
  after the last `seq` applied are exactly what the copy misses. The current rows of
  those (address, class) keys are read in the same snapshot and written locally in
  one transaction with the new `last_seq`: a key without a row any more was cleared.
- A full copy, when there is no `last_seq` (a first start), or when the changes after
  it are no longer all kept (the log is pruned after `[state] change_retention`), or
  when PostgreSQL knows no change as recent (a restored or different database): every
  row, read from one snapshot through a server-side cursor in key order, and merged
  into the local table a chunk at a time. Each chunk covers a range of keys, so its
  transaction also deletes the local keys of that range PostgreSQL does not have, and
  writes only the rows that differ. Until the last chunk, keys past the cursor keep
  their old rows (a cleared entry refuses a little longer, never the reverse).
- Class pauses: a small table, read whole in each snapshot and replaced locally when
  it differs.
- Times travel as the text SQLite keeps (formatted by PostgreSQL, faster than Python
  for a million rows), keys are compared byte by byte on both sides (`COLLATE "C"`,
  SQLite's BINARY).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from relay.store.backend import Db, marks
from relay.store.reads import column
from relay.store.records import MirrorProbe
from relay.suppression import Suppression
from relay.timeutil import maybe_time, to_text, utcnow

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from relay.config import StateConfig

COLUMNS = tuple(column(f.name) for f in fields(Suppression))  # in the order writes.py writes them
TIMES = frozenset({"created_at", "updated_at", "expires_at", "last_refused_at"})
CLASS_COLUMNS = ("class", "paused", "reason", "changed_at", "changed_by")
CHANGES_BATCH = 10_000  # changes applied in one local transaction
COPY_CHUNK = 10_000  # rows of a full copy merged in one local transaction (some 50 ms)

Key = tuple[str, str]  # (address, class)
Entry = tuple[Any, ...]  # a suppressions row, COLUMNS in order, times as stored text
ClassRow = tuple[Any, ...]  # a class_state row, CLASS_COLUMNS in order, paused as 0/1


@dataclass(frozen=True)
class MirrorState:
    """How far the local copy has caught up (the `mirror_state` row)."""

    source: str | None = None  # the shared state it copies (its URL without password); None: never
    last_seq: int | None = None  # the last change applied; None: no complete copy
    synced_at: datetime | None = None  # when it last held everything the shared state had

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and self.synced_at is not None


@dataclass(frozen=True)
class Changes:
    """What one snapshot of PostgreSQL holds that the copy at `after` does not."""

    upto: int  # the last seq these cover
    rows: list[Entry]  # the current rows of the changed keys
    gone: list[Key]  # changed keys that have no row any more
    classes: list[ClassRow]  # the whole class_state table
    more: bool  # the batch was full: more changes wait
    resync: str | None = None  # why a full copy is needed instead (then nothing else is set)
    behind: int = 0  # changes after `after` (at most the batch)


def key(row: Entry) -> Key:
    return (row[0], row[1])


def resync_reason(last_seq: int | None, oldest: int | None, newest: int | None) -> str | None:
    """Why the change log cannot bring a copy at `last_seq` up to date, or None (pure).

    The log is pruned by age but always keeps its newest row, so an empty log, or one
    whose newest change is older than the copy, is not the log this copy followed.
    """
    if last_seq is None:
        return "no complete copy yet"
    if newest is None:
        return None if last_seq == 0 else "the shared state has no change log this copy followed"
    if last_seq > newest:
        return f"the shared state's last change ({newest}) is older than this copy's ({last_seq})"
    if oldest is not None and oldest > last_seq + 1:
        return f"the changes after {last_seq} were pruned (the oldest kept is {oldest})"
    return None


# -- PostgreSQL: the source --------------------------------------------------------------------


def _as_text(column: str) -> str:
    """A timestamptz column as SQLite keeps times (relay.timeutil.to_text), formatted by PostgreSQL."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# Statements made of this module's constants only (no input is ever formatted in).
_ROWS = "SELECT " + ", ".join(_as_text(c) if c in TIMES else c for c in COLUMNS) + " FROM suppressions"  # noqa: S608
_CLASSES = (
    f"SELECT class, paused::int, reason, {_as_text('changed_at')}, changed_by "  # noqa: S608
    "FROM class_state ORDER BY class"
)
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_KEYS = "unnest(%s::text[], %s::text[]) AS k(address, class)"


def _bounds(conn: psycopg.Connection[Any]) -> tuple[int | None, int | None]:
    """The oldest and newest seq the change log keeps (None, None when it is empty)."""
    row = conn.execute("SELECT min(seq), max(seq) FROM suppression_changes").fetchone()
    return (row[0], row[1]) if row else (None, None)


def _columns_of(keys: Sequence[Key]) -> list[list[str]]:
    return [[a for a, _ in keys], [c for _, c in keys]]


def read_changes(conn: psycopg.Connection[Any], after: int | None, limit: int = CHANGES_BATCH) -> Changes:
    """The changes after seq `after`, with the current rows of their keys, from one snapshot."""
    with conn.transaction():
        conn.execute(_SNAPSHOT)
        classes = [tuple(r) for r in conn.execute(_CLASSES).fetchall()]
        oldest, newest = _bounds(conn)
        why = resync_reason(after, oldest, newest)
        if why is not None or after is None:
            return Changes(0, [], [], classes, more=False, resync=why)
        logged = conn.execute(
            "SELECT seq, address, class FROM suppression_changes WHERE seq > %s ORDER BY seq LIMIT %s",
            (after, limit),
        ).fetchall()
        if not logged:
            return Changes(after, [], [], classes, more=False)
        keys = list(dict.fromkeys((address, klass) for _, address, klass in logged))
        rows = conn.execute(
            f"{_ROWS} WHERE (address, class) IN (SELECT address, class FROM {_KEYS})",  # noqa: S608
            _columns_of(keys),
        ).fetchall()
    present = {key(r) for r in rows}
    gone = [k for k in keys if k not in present]
    return Changes(logged[-1][0], [tuple(r) for r in rows], gone, classes, len(logged) == limit,
                   behind=len(logged))  # fmt: skip


def copy_rows(conn: psycopg.Connection[Any], chunk: int = COPY_CHUNK) -> Iterator[Any]:
    """A full copy from one snapshot: first (last seq, class rows), then lists of rows in key order.

    A generator, so that the caller can apply each chunk locally before reading the
    next; it must be resumed on the connection's thread, and closed if abandoned.
    """
    with conn.transaction():
        conn.execute(_SNAPSHOT)
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM suppression_changes").fetchone()
        classes = [tuple(r) for r in conn.execute(_CLASSES).fetchall()]
        yield (int(row[0]) if row else 0, classes)
        with conn.cursor(name="ses_relay_mirror_copy") as cur:
            cur.itersize = chunk
            cur.execute(f'{_ROWS} ORDER BY address COLLATE "C", class COLLATE "C"')
            while rows := cur.fetchmany(chunk):
                yield rows  # tuples: the mirror's connection reads rows as tuples


def missing_keys(conn: psycopg.Connection[Any], keys: Sequence[Key]) -> list[Key]:
    """Which of `keys` the shared state has no suppression for."""
    if not keys:
        return []
    rows = conn.execute(
        f"SELECT k.address, k.class FROM {_KEYS} WHERE NOT EXISTS ("  # noqa: S608
        "SELECT 1 FROM suppressions s WHERE s.address = k.address AND s.class = k.class)",
        _columns_of(keys),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def prune_changes(conn: psycopg.Connection[Any], retention: timedelta, batch: int = 10_000) -> int:
    """Delete changes older than `retention`, a batch at a time, always keeping the newest.

    Every host's mirror runs this now and then: deleting a row another host deletes at
    the same moment is harmless. A copy behind the oldest change kept makes a full copy.
    """
    deleted = 0
    while True:
        cur = conn.execute(
            "DELETE FROM suppression_changes WHERE seq IN (SELECT seq FROM suppression_changes "
            "WHERE at < clock_timestamp() - %s AND seq < (SELECT max(seq) FROM suppression_changes) "
            "ORDER BY seq LIMIT %s)",
            (retention, batch),
        )
        deleted += cur.rowcount
        if cur.rowcount < batch:
            return deleted


@dataclass(frozen=True)
class Lag:
    """How far a copy at some seq is behind the shared state, as `state check` reports it."""

    behind: int | None  # changes not applied yet; None: it needs a full copy
    oldest_pending: datetime | None  # when the oldest of them was made
    classes_differ: bool


def read_lag(conn: psycopg.Connection[Any], last_seq: int | None, classes: Sequence[ClassRow]) -> Lag:
    with conn.transaction():
        conn.execute(_SNAPSHOT)
        oldest, newest = _bounds(conn)
        theirs = [tuple(r) for r in conn.execute(_CLASSES).fetchall()]
        if resync_reason(last_seq, oldest, newest) is not None:
            return Lag(None, None, theirs != list(classes))
        count, first = conn.execute(
            "SELECT count(*), min(at) FROM suppression_changes WHERE seq > %s", (last_seq,)
        ).fetchone() or (0, None)
    return Lag(int(count), first, theirs != list(classes))


# -- the local copy: functions of the local file's Db -------------------------------------------

_UPSERT = (
    f"INSERT INTO suppressions ({', '.join(COLUMNS)}) VALUES ({marks(len(COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (address, class) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("address", "class"))
)
_CLASS_INSERT = f"INSERT INTO class_state ({', '.join(CLASS_COLUMNS)}) VALUES ({marks(len(CLASS_COLUMNS))})"  # noqa: S608
_DELETE = "DELETE FROM suppressions WHERE address = ? AND class = ?"
_LOCAL_ROWS = f"SELECT {', '.join(COLUMNS)} FROM suppressions"  # noqa: S608 - constants


def read_state(db: Db) -> MirrorState:
    row = db.fetchone("SELECT source, last_seq, synced_at FROM mirror_state WHERE id = 1")
    if row is None:
        return MirrorState()
    return MirrorState(row["source"], row["last_seq"], maybe_time(row["synced_at"]))


def _save_state(db: Db, state: MirrorState) -> None:
    db.execute(
        "INSERT INTO mirror_state (id, source, last_seq, synced_at) VALUES (1, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET source = excluded.source, last_seq = excluded.last_seq, "
        "synced_at = excluded.synced_at",
        (state.source, state.last_seq, None if state.synced_at is None else to_text(state.synced_at)),
    )


def read_classes(db: Db) -> list[ClassRow]:
    rows = db.fetchall(f"SELECT {', '.join(CLASS_COLUMNS)} FROM class_state ORDER BY class")  # noqa: S608
    return [(r["class"], int(r["paused"]), r["reason"], r["changed_at"], r["changed_by"]) for r in rows]


def _replace_classes(db: Db, classes: Sequence[ClassRow]) -> None:
    db.execute("DELETE FROM class_state")
    db.executemany(_CLASS_INSERT, classes)


def apply_changes(db: Db, changes: Changes, state: MirrorState, classes_changed: bool) -> MirrorState:
    """Write one batch of changes (and the class pauses, when they changed) with `state`."""
    db.executemany(_UPSERT, changes.rows)
    db.executemany(_DELETE, changes.gone)
    if classes_changed:
        _replace_classes(db, changes.classes)
    _save_state(db, state)
    return state


def stamp(db: Db, state: MirrorState) -> None:
    """Record that the copy is still current (nothing changed since the last write)."""
    _save_state(db, state)


def merge_chunk(db: Db, rows: Sequence[Entry], after: Key | None, last: bool) -> int:
    """Merge one chunk of a full copy (rows in key order) into the keys it covers.

    The chunk covers the keys after `after` up to its own last key, or every key after
    `after` when it is the `last`. Local keys of that range the chunk lacks are deleted,
    rows that differ written; the number of local rows changed.
    """
    clauses, params = [], []
    if after is not None:
        clauses.append("(address, class) > (?, ?)")
        params += list(after)
    if rows and not last:
        clauses.append("(address, class) <= (?, ?)")
        params += list(key(rows[-1]))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    local = {key(r): tuple(r) for r in db.fetchall(_LOCAL_ROWS + where, params)}
    changed = [row for row in rows if local.pop(key(row), None) != row]
    db.executemany(_UPSERT, changed)
    db.executemany(_DELETE, list(local))
    return len(changed) + len(local)


def finish_copy(db: Db, classes: Sequence[ClassRow], state: MirrorState) -> None:
    _replace_classes(db, classes)
    _save_state(db, state)


def count_entries(db: Db) -> int:
    row = db.fetchone("SELECT count(*) AS n FROM suppressions")
    return int(row["n"]) if row else 0


def active_keys(db: Db, after: Key | None, now: datetime, limit: int) -> list[Key]:
    """Up to `limit` keys of unexpired local entries after `after`, in key order."""
    where, params = "(expires_at IS NULL OR expires_at > ?)", [to_text(now)]
    if after is not None:
        where += " AND (address, class) > (?, ?)"
        params += list(after)
    rows = db.fetchall(
        f"SELECT address, class FROM suppressions WHERE {where} ORDER BY address, class LIMIT ?",  # noqa: S608
        [*params, limit],
    )
    return [(r["address"], r["class"]) for r in rows]


# -- `ses-relay state check` ------------------------------------------------------------------


def probe(path: Path, state: StateConfig, *, reachable: bool) -> MirrorProbe | None:
    """The mirror in the store file at `path`, and how far behind the shared state it is
    (when that is `reachable`), changing nothing; None when there is no store file here."""
    from relay.store import sqlite

    if not path.is_file():
        return None
    max_age = state.mirror_max_age.total_seconds()
    try:
        with contextlib.closing(sqlite.read_only(path)) as conn:
            local, classes = read_state(sqlite.SqliteDb(conn)), read_classes(sqlite.SqliteDb(conn))
    except sqlite3.Error as exc:  # no mirror_state table yet (an older store), or unreadable
        return MirrorProbe(max_age, note=f"not readable: {exc}")
    if local.source != state.where:
        note = "never" if local.source is None else f"it copies another state, {local.source}"
        return MirrorProbe(max_age, note=note)
    probed = MirrorProbe(max_age, local.synced_at, local.last_seq)
    if not local.complete or local.synced_at is None:
        return probed
    now = utcnow()
    since_synced = max(0.0, (now - local.synced_at).total_seconds())
    if not reachable:
        return dataclasses.replace(probed, lag_seconds=since_synced, note="the shared state does not answer")
    import psycopg

    try:
        timeout = max(2, math.ceil(state.connect_timeout.total_seconds()))
        with psycopg.connect(state.url, autocommit=True, connect_timeout=timeout) as conn:
            lag = read_lag(conn, local.last_seq, classes)
    except psycopg.Error as exc:
        return dataclasses.replace(probed, lag_seconds=since_synced, note=f"lag not read: {exc}")
    if lag.behind is None:
        return dataclasses.replace(probed, lag_seconds=since_synced, note="a full copy is due")
    pending = 0.0 if lag.oldest_pending is None else max(0.0, (now - lag.oldest_pending).total_seconds())
    lag_seconds = max(pending, since_synced if lag.classes_differ else 0.0)
    note = "class pauses differ" if lag.classes_differ else ""
    return dataclasses.replace(probed, behind=lag.behind, lag_seconds=lag_seconds, note=note)
