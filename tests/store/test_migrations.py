"""The SQLite schema's numbered migrations: a file of any earlier version opens, and keeps its data."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from relay.store import Store, StoreError
from relay.store.sqlite_schema import MIGRATIONS
from tests.support.entries import NOW
from tests.support.stores import db_rows, in_store, new_submission


def columns(tmp_path: Path, table: str) -> list[str]:
    return [r[1] for r in db_rows(tmp_path, f"PRAGMA table_info({table})")]


def old_store(db: Path, version: int) -> None:
    """A store file as ses-relay left it at schema `version`."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number, script in enumerate(MIGRATIONS[:version], start=1):
            conn.executescript(script)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    finally:
        conn.close()


def test_a_new_store_is_at_the_latest_version_without_columns_no_code_reads(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        assert await store.schema_version() == len(MIGRATIONS) == 8

    in_store(tmp_path, scenario)
    assert columns(tmp_path, "outbox") == ["id", "kind", "submission_id", "body", "created_at"]
    spool = ["submission_id", "data", "attempts", "next_attempt_at", "last_error", "created_at"]
    assert columns(tmp_path, "spool") == spool
    assert "ordinal" in columns(tmp_path, "recipients")


def test_a_version_4_store_keeps_its_mail_and_the_envelope_order_of_its_recipients(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    old_store(db, 4)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        mail = {"a" * 20: ("z@x.org", "a@x.org", "m@x.org"), "b" * 20: ("q@x.org", "b@x.org")}
        for sid, addresses in mail.items():
            conn.execute(
                "INSERT INTO submissions (id, mail_from, class, class_source, size, created_at) "
                "VALUES (?, 'app@example.com', 'transactional', 'default', 10, ?)",
                (sid, "2025-03-03T09:00:00.000000Z"),
            )
            for address in addresses:
                conn.execute(
                    "INSERT INTO recipients (submission_id, address, status, updated_at) "
                    "VALUES (?, ?, 'queued', '2025-03-03T09:00:00.000000Z')",
                    (sid, address),
                )
            conn.execute(
                "INSERT INTO spool (submission_id, data, next_attempt_at, lease_until, created_at) "
                "VALUES (?, x'4869', 0, 99, 1.0)",
                (sid,),
            )
    finally:
        conn.close()

    async def scenario(store: Store) -> None:
        assert await store.schema_version() == len(MIGRATIONS)
        first = await store.submission("a" * 20)
        assert first is not None
        assert [r.address for r in first.recipients] == ["z@x.org", "a@x.org", "m@x.org"]
        due = {item.submission.id: item for item in await store.due(10.0, 10)}
        assert due["a" * 20].pending == ("z@x.org", "a@x.org", "m@x.org")
        assert due["b" * 20].pending == ("q@x.org", "b@x.org")
        assert due["b" * 20].data == b"Hi"

    in_store(tmp_path, scenario)
    assert "lease_until" not in columns(tmp_path, "spool")
    ordered = "SELECT submission_id, address, ordinal FROM recipients ORDER BY submission_id, ordinal"
    assert db_rows(tmp_path, ordered) == [
        ("a" * 20, "z@x.org", 0), ("a" * 20, "a@x.org", 1), ("a" * 20, "m@x.org", 2),
        ("b" * 20, "q@x.org", 0), ("b" * 20, "b@x.org", 1),
    ]  # fmt: skip


def test_new_submissions_keep_their_recipients_in_envelope_order(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        sub = new_submission(("z@x.org", "a@x.org", "m@x.org"))
        await store.accept(sub, b"x", 1.0)
        found = await store.submission(sub.id)
        assert found is not None
        assert [r.address for r in found.recipients] == ["z@x.org", "a@x.org", "m@x.org"]
        assert found.tags == (("team", "a"),) and found.created_at == NOW
        recent = await store.recent_submissions(NOW)
        assert [r.address for r in recent[0].recipients] == ["z@x.org", "a@x.org", "m@x.org"]

    in_store(tmp_path, scenario)


def test_a_store_from_a_newer_ses_relay_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    old_store(db, len(MIGRATIONS))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS) + 1,))
    newer, ours = len(MIGRATIONS) + 1, len(MIGRATIONS)
    refused = rf"store schema version {newer} is newer than this ses-relay \({ours}\)"
    with pytest.raises(StoreError, match=refused):
        asyncio.run(Store.open(db))
    assert db_rows(tmp_path, "SELECT max(version) FROM schema_version") == [(newer,)]


def test_a_store_that_cannot_be_opened_says_which_and_why(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    db.write_bytes(b"not a database, " * 100)
    with pytest.raises(StoreError, match=f"cannot open store {db}: file is not a database"):
        asyncio.run(Store.open(db))
