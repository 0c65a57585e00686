"""Moving up: a one-host store's state copied into PostgreSQL (`ses-relay state migrate`).

The copy must be safe to run again (after a failure half-way, or once more after the
relay was stopped for good) and must not need the store in memory:

- Each table is read in one SQLite read snapshot, in rowid order, and written in
  chunks of CHUNK rows, one PostgreSQL transaction a chunk: a state of any size
  streams through, and a copy cut short keeps what it committed.
- A row already in PostgreSQL is never copied twice. Natural keys say so where a
  table has one (submissions by id, recipients by submission and address, events and
  notices by dedupe key, suppressions by address and class, class states by class);
  the other tables (audit, review, dead letters, transient-bounce history, suppression
  history) keep `origin` = `<host id>:<row id here>` in a unique column, the host id
  being the data dir's (relay/store/store.py `host_id`).
- What the relays may have moved on since a first copy is brought forward, never
  back: a recipient's status only advances (relay.vocabulary), and a suppression on
  file on both sides is merged as any other (relay.suppression.combine: levels never
  go down, expiries only extend). Everything else on file stays as it is.
- Rows that point at an event (suppression history, review, events held unmatched)
  point at its id in PostgreSQL, found through the event's dedupe key.

The spool (message bytes, what is in flight) is not copied: it stays the host's own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from relay.logredact import redact_url
from relay.store import postgres, reads, sqlite
from relay.store.records import StoreError
from relay.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS
from relay.store.writes import put_suppressions
from relay.suppression import Suppression, combine
from relay.vocabulary import STATUS_RANK

CHUNK = 500  # rows a PostgreSQL transaction
ORIGIN = "origin"


@dataclass
class Copied:
    """What became of one table's rows."""

    table: str
    copied: int = 0  # not in PostgreSQL before: inserted
    updated: int = 0  # there already, and brought forward (a status advanced, a suppression merged)
    present: int = 0  # there already, unchanged
    skipped: int = 0  # pointing at an event the log no longer has

    @property
    def rows(self) -> int:
        return self.copied + self.updated + self.present + self.skipped


@dataclass(frozen=True)
class Table:
    """How one table is copied: the key that says a row is there already, and its quirks."""

    name: str
    key: tuple[str, ...]  # the ON CONFLICT target: a natural key, or (ORIGIN,)
    event_column: str | None = None  # a column holding an events.id, remapped by dedupe key
    booleans: tuple[str, ...] = ()  # SQLite's 0/1 columns that PostgreSQL keeps as boolean
    on_conflict: str = "DO NOTHING"


def _advance_status() -> str:
    """ON CONFLICT action for recipients: take the local status when it ranks higher."""
    ranks = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in STATUS_RANK.items())
    return (
        "DO UPDATE SET status = excluded.status, detail = excluded.detail, "
        "ses_message_id = coalesce(excluded.ses_message_id, recipients.ses_message_id), "
        "updated_at = excluded.updated_at "
        f"WHERE (CASE recipients.status {ranks} END) < (CASE excluded.status {ranks} END)"
    )


# In the order they are copied: what a row points at is copied before it.
TABLES: tuple[Table, ...] = (
    Table("submissions", ("id",)),
    Table("recipients", ("submission_id", "address"), on_conflict=_advance_status()),
    Table("suppressions", ("address", "class")),  # merged: see _copy_suppressions
    Table("events", ("dedupe_key",)),
    Table("suppression_history", (ORIGIN,), event_column="event_id"),
    Table("audit", (ORIGIN,)),
    Table("transient_bounces", (ORIGIN,)),
    Table("dead_letters", (ORIGIN,)),
    Table("review", (ORIGIN,), event_column="event_id"),
    Table("notices", ("dedupe_key",)),
    Table("unmatched_events", ("event_id",), event_column="event_id"),
    Table("class_state", ("class",), booleans=("paused",)),
)


def copy_state(
    source: Path, url: str, source_id: str, *, chunk: int = CHUNK,
    done: Callable[[Copied], None] = lambda _: None,
) -> list[Copied]:  # fmt: skip
    """Copy the state of the SQLite store at `source` into the PostgreSQL database at `url`.

    `source_id` names the store in `origin` keys (the data dir's host id). The target's
    schema is created or brought up to date first; StoreError, with nothing copied, if
    it is newer than this ses-relay (or the source is), or if either cannot be opened.
    `done` hears of each table as it is finished.
    """
    where = redact_url(url)
    with _source(source) as src, _target(url, where) as dst:
        results = []
        for table in TABLES:
            try:
                counted = _copy(src, dst, table, source_id, chunk)
            except psycopg.Error as exc:
                raise StoreError(f"copying {table.name} into {where} failed: {postgres._why(exc)}") from exc
            done(counted)
            results.append(counted)
        return results


@contextlib.contextmanager
def _source(path: Path) -> Iterator[sqlite3.Connection]:
    """The one-host store, brought up to this ses-relay's schema (as any command does), read
    in one snapshot: the copy sees one moment of it even if a relay still writes there."""
    found = sqlite.probe(path)
    if not found.reachable:
        raise StoreError(f"cannot read the store at {path}: {found.error}")
    if (found.schema_version or 0) > len(SQLITE_MIGRATIONS):
        raise StoreError(
            f"the store at {path} has schema version {found.schema_version}, newer than this "
            f"ses-relay ({len(SQLITE_MIGRATIONS)}); upgrade ses-relay"
        )
    try:
        conn = sqlite._connect(path, "NORMAL")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from exc
    try:
        sqlite._migrate(conn)
        conn.execute("BEGIN")  # one read snapshot for the whole copy
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"reading the store at {path} failed: {exc}") from exc
    finally:
        conn.close()


@contextlib.contextmanager
def _target(url: str, where: str) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(url, **postgres._connect_kwargs(5.0))
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {where}: {postgres._why(exc)}") from exc
    try:
        try:
            postgres.migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot bring the schema at {where} up to date: {postgres._why(exc)}") from exc
        yield conn
    finally:
        conn.close()


def _copy(
    src: sqlite3.Connection, dst: psycopg.Connection[Any], table: Table, source_id: str, size: int
) -> Copied:
    counted = Copied(table.name)
    wanted = _target_columns(dst, table.name)
    cursor = src.execute(f"SELECT rowid AS rowid_here, * FROM {table.name} ORDER BY rowid")  # noqa: S608
    have = [d[0] for d in cursor.description][1:]
    columns = [c for c in have if c in wanted]
    if table.key == (ORIGIN,):
        columns.append(ORIGIN)
    while rows := cursor.fetchmany(size):
        values = [_values(row, columns, table, source_id) for row in rows]
        with dst.transaction():
            if table.event_column is not None:
                values = _remap_events(src, dst, values, columns.index(table.event_column), table, counted)
            if not values:
                continue
            if table.name == "suppressions":
                _copy_suppressions(dst, columns, values, counted)
            else:
                _insert(dst, table, columns, values, counted)
    return counted


_TARGET_COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = %s AND is_identity = 'NO' AND column_name <> 'origin'"
)


def _target_columns(dst: psycopg.Connection[Any], name: str) -> set[str]:
    """The columns a copied row fills: not the ids PostgreSQL numbers itself, nor `origin`."""
    return {r["column_name"] for r in dst.execute(_TARGET_COLUMNS, (name,)).fetchall()}


def _values(row: sqlite3.Row, columns: Sequence[str], table: Table, source_id: str) -> list[Any]:
    out = []
    for column in columns:
        if column == ORIGIN:
            out.append(f"{source_id}:{row['rowid_here']}")
        elif column in table.booleans:
            out.append(None if row[column] is None else bool(row[column]))
        else:
            out.append(row[column])
    return out


def _remap_events(
    src: sqlite3.Connection, dst: psycopg.Connection[Any], values: list[list[Any]], at: int, table: Table,
    counted: Copied,
) -> list[list[Any]]:  # fmt: skip
    """The rows with their event id as PostgreSQL numbers that event; a row whose event the
    log lost keeps no pointer (or, when the pointer is its key, is skipped)."""
    local = sorted({v[at] for v in values if v[at] is not None})
    keys: dict[int, str] = {}
    for start in range(0, len(local), 900):  # SQLite's limit on parameters
        part = local[start : start + 900]
        marks = ",".join("?" * len(part))
        found = src.execute(f"SELECT id, dedupe_key FROM events WHERE id IN ({marks})", part)  # noqa: S608
        keys.update((r["id"], r["dedupe_key"]) for r in found)
    there = dst.execute(
        "SELECT id, dedupe_key FROM events WHERE dedupe_key = ANY(%s)", (list(keys.values()),)
    ).fetchall()
    by_key = {r["dedupe_key"]: r["id"] for r in there}
    kept = []
    for v in values:
        v[at] = by_key.get(keys.get(v[at], "")) if v[at] is not None else None
        if v[at] is None and table.key == (table.event_column,):
            counted.skipped += 1
            continue
        kept.append(v)
    return kept


def _insert(
    dst: psycopg.Connection[Any],
    table: Table,
    columns: Sequence[str],
    values: list[list[Any]],
    counted: Copied,
) -> None:
    names = ", ".join(columns)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = (
        f"INSERT INTO {table.name} ({names}) VALUES {', '.join([row] * len(values))} "  # noqa: S608
        f"ON CONFLICT ({', '.join(table.key)}) {table.on_conflict} RETURNING (xmax = 0) AS inserted"
    )
    returned = dst.execute(sql, [v for row_values in values for v in row_values]).fetchall()
    inserted = sum(1 for r in returned if r["inserted"])
    counted.copied += inserted
    counted.updated += len(returned) - inserted
    counted.present += len(values) - len(returned)


def _copy_suppressions(
    dst: psycopg.Connection[Any], columns: Sequence[str], values: list[list[Any]], counted: Copied
) -> None:
    """Insert the entries PostgreSQL lacks; merge those it has (relay.suppression.combine)."""
    incoming = [reads.decode(Suppression, dict(zip(columns, v, strict=True))) for v in values]
    keys = [(s.address, s.klass) for s in incoming]
    on_file = {
        (r["address"], r["class"]): reads.decode(Suppression, r)
        for r in dst.execute(
            "SELECT s.* FROM suppressions s JOIN unnest(%s::text[], %s::text[]) AS k(address, class) "
            "USING (address, class) FOR UPDATE OF s",
            ([a for a, _ in keys], [c for _, c in keys]),
        ).fetchall()
    }
    writes = []
    for new in incoming:
        existing = on_file.get((new.address, new.klass))
        merged = combine(existing, new)
        if existing is None:
            counted.copied += 1
        elif merged == existing:
            counted.present += 1
            continue
        else:
            counted.updated += 1
        writes.append(merged)
    if writes:
        put_suppressions(postgres.PgDb(dst), writes)
