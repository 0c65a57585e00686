"""What lets a second backend run the same reads and writes: rows decoded from text or
from a driver's own types, and SQL without SQLite-only forms."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import relay.store.reads
import relay.store.spool_writes
import relay.store.writes
from relay.store import ClassState, NoticeRecord, RecipientContext
from relay.store.postgres import PgDb, translate
from relay.store.reads import decode
from relay.store.sqlite import RETURNING_ID, SqliteDb
from relay.store.writes import stored
from relay.suppression import Cause, Level, Suppression
from relay.timeutil import from_text, maybe_time, to_text

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

ENTRY = Suppression(
    address="a@example.org", klass="*", level=Level.HARD, cause=Cause.BOUNCE, reason="bounced",
    created_at=T0, updated_at=T0 + timedelta(hours=1), expires_at=None, feedback_id="f-1",
    ses_message_id="m-1", refused_count=2, last_refused_at=T0 + timedelta(days=1),
)  # fmt: skip


def test_from_text_takes_stored_text_and_a_drivers_aware_datetime_alike() -> None:
    assert from_text("2025-03-03T09:00:00.000000Z") == T0
    assert from_text(T0) == T0
    paris = datetime(2025, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert from_text(paris) == T0 and from_text(paris).tzinfo is UTC
    assert maybe_time(None) is None and maybe_time(paris) == T0
    with pytest.raises(ValueError, match="naive datetime"):
        from_text(datetime(2025, 3, 3, 9, 0))


def test_a_row_of_stored_text_and_a_row_of_driver_types_decode_to_the_same_record() -> None:
    """SQLite hands back text, integers and 0/1; PostgreSQL datetimes and booleans."""
    as_text = {("class" if k == "klass" else k): stored(v) for k, v in vars(ENTRY).items()}
    assert as_text["level"] == 2 and as_text["cause"] == "bounce" and as_text["expires_at"] is None
    assert as_text["updated_at"] == to_text(ENTRY.updated_at)
    as_driver = {**as_text, "created_at": ENTRY.created_at, "updated_at": ENTRY.updated_at,
                 "last_refused_at": ENTRY.last_refused_at}  # fmt: skip
    assert decode(Suppression, as_text) == decode(Suppression, as_driver) == ENTRY

    state = {"class": "bulk", "paused": 1, "reason": "r", "changed_at": to_text(T0), "changed_by": "guard"}
    assert decode(ClassState, state) == decode(ClassState, {**state, "paused": True, "changed_at": T0})
    assert decode(ClassState, state) == ClassState(True, "r", T0, "guard")


def test_decode_takes_given_fields_as_they_are_and_the_rest_from_the_row() -> None:
    row = {"dedupe_key": "k", "reason": "bounce", "recipient": "r@x.org", "sender": "s@x.org",
           "submission_id": None, "ses_message_id": "m", "class": "bulk", "status": "5.1.1",
           "diagnostic": "smtp; 550", "bounce_type": "Permanent", "bounce_subtype": "General"}  # fmt: skip
    notice = decode(NoticeRecord, row, extra="note")
    assert notice.klass == "bulk" and notice.extra == "note" and notice.status == "5.1.1"
    context = {"submission_id": "s", "class": "bulk", "status": "sent", "mail_from": "app@x.org"}
    assert decode(RecipientContext, context) == RecipientContext("s", "bulk", "sent", "app@x.org")
    with pytest.raises(IndexError):
        decode(RecipientContext, _Row({"submission_id": "s"}))


class _Row(dict):  # sqlite3.Row's way with a missing column
    def __missing__(self, key: str) -> None:
        raise IndexError(f"No item with that key: {key}")


SQLITE_ONLY = {
    "INSERT OR IGNORE/REPLACE (use ON CONFLICT)": r"\bINSERT\s+OR\b|\bREPLACE\s+INTO\b",
    "rowid (keep an ordered column)": r"\browid\b",
    "cursor.lastrowid (use RETURNING)": r"\blastrowid\b",
    "SQLite date functions": r"\b(?:julianday|strftime|unixepoch)\s*\(|\bdatetime\s*\('",
    "ifnull/iif (use coalesce/CASE)": r"\b(?:ifnull|iif)\s*\(",
    "GLOB": r"\bGLOB\b",
    "numbered placeholders (use ?)": r"\?\d",
}


@pytest.mark.parametrize(
    "module", [relay.store.reads, relay.store.writes, relay.store.spool_writes], ids=lambda m: m.__name__
)
def test_the_sql_of_reads_and_writes_has_no_sqlite_only_forms(module: object) -> None:
    source = Path(module.__file__).read_text()  # type: ignore[attr-defined]
    strings = " ".join(re.findall(r'"(?:[^"\\\n]|\\.)*"', source))
    for what, pattern in SQLITE_ONLY.items():
        found = re.findall(pattern, strings, flags=re.IGNORECASE)
        assert not found, f"{module.__name__}: {what}: {found}"


def test_sqlite_answers_returning_id_from_the_rowid_as_returning_itself_would(tmp_path: Path) -> None:
    """The SQLite wrapper skips RETURNING's temporary table for `RETURNING id`; same answers."""
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE)")
        db = SqliteDb(conn)
        insert = "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) DO NOTHING"
        assert dict(db.fetchone(insert + RETURNING_ID, ["a"])) == {"id": 1}  # type: ignore[arg-type]
        assert db.fetchone(insert + RETURNING_ID, ["a"]) is None  # a duplicate: no row
        itself = db.fetchone(insert + " RETURNING id AS id", ["b"])  # SQLite's own RETURNING
        assert itself is not None and itself["id"] == 2
        assert db.fetchone(insert + " RETURNING id AS id", ["b"]) is None
        assert dict(db.fetchone(insert + RETURNING_ID, ["c"])) == {"id": 3}  # type: ignore[arg-type]
        table = [tuple(r) for r in db.fetchall("SELECT id, k FROM t ORDER BY id")]
        assert table == [(1, "a"), (2, "b"), (3, "c")]
    finally:
        conn.close()


def test_postgresql_runs_the_same_text_with_its_own_placeholders() -> None:
    """`?` becomes psycopg's `%s` and a literal `%` is doubled, once per statement text."""
    assert translate("SELECT * FROM t WHERE a = ? AND b IN (?,?)") == (
        "SELECT * FROM t WHERE a = %s AND b IN (%s,%s)"
    )
    assert translate("SELECT 'x%' || ? AS v") == "SELECT 'x%%' || %s AS v"
    assert translate("SELECT 1") == "SELECT 1"


def test_postgresql_answers_a_statement_with_a_literal_percent_as_written(pg_url: str) -> None:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        db = PgDb(conn)
        row = db.fetchone("SELECT ? || '%' AS v, 'a%b' LIKE 'a%' AS m", ["50"])
        assert row is not None and (row["v"], row["m"]) == ("50%", True)
        assert db.execute("UPDATE class_state SET reason = ? WHERE class = ?", ["100%", "none"]) == 0
        db.lock(["a@example.org", "b@example.org", "a@example.org"])  # twice in one list: taken once
        held = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held is not None and held["n"] == 2
