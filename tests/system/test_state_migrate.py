"""`ses-relay state migrate --to URL`: a one-host store's state copied into PostgreSQL.

The store is made the way a relay makes it (submissions accepted, SES calls recorded,
SES events applied, an admin's adds, import, clear and pause) in a real SQLite file;
the command runs as a process against a real PostgreSQL. Every table's rows arrive,
what points at an event points at the same event there, a second run changes
nothing, a run after more happened here brings only that, and `serve` on the
migrated state refuses what the one host had suppressed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay.clearing import ClearRequest
from relay.store import Store
from relay.store.pg_copy import TABLES
from relay.suppression import Cause, Level
from relay.suppression_history import Source
from relay.timeutil import new_id, utcnow
from tests.conftest import run_cli
from tests.support.entries import suppression
from tests.support.smtp import smtp
from tests.support.sns_sqs import bounce, complaint, delivery, ses_mail
from tests.support.stores import apply, new_submission

IMPORTED = 1_200  # more than one chunk of the copy (pg_copy.CHUNK)
COMPARED = [t.name for t in TABLES]


def pg(url: str, statement: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def local(data_dir: Path, statement: str, *params: Any) -> list[sqlite3.Row]:
    db = sqlite3.connect(data_dir / "relay.db")
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute(statement, params))
    finally:
        db.close()


def counts_here(data_dir: Path) -> dict[str, int]:
    return {t: local(data_dir, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in COMPARED}


def counts_there(url: str) -> dict[str, int]:
    return {t: pg(url, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in COMPARED}


def snapshot(url: str) -> dict[str, list[str]]:
    """Every copied table's rows, in a stable order."""
    return {t: sorted(map(repr, pg(url, f"SELECT * FROM {t}"))) for t in COMPARED}


def migrate(data_dir: Path, url: str, *extra: str) -> Any:
    return run_cli("state", "migrate", "--to", url, *extra, data_dir=data_dir)


def migrate_json(data_dir: Path, url: str) -> dict[str, dict[str, int]]:
    result = migrate(data_dir, url, "--json")
    assert result.returncode == 0, result.stderr
    return {row["table"]: row for row in json.loads(result.stdout)}


async def one_hosts_life(data_dir: Path) -> None:
    """What a relay on its own keeps: mail sent, SES's answers, an admin's work."""
    store = await Store.open(data_dir / "relay.db")
    try:
        now = utcnow() - timedelta(minutes=5)
        rcpts = ("gone@example.org", "angry@example.org", "full@example.org", "fine@example.org")
        sid = new_id(now)
        await store.accept(
            new_submission(rcpts, sid=sid, at=now), b"Subject: hi\r\n\r\nhi\r\n", now.timestamp()
        )
        await store.record_outcome(sid, rcpts, "sent", now=now, ses_message_id="0100-ses-1")
        mail = ses_mail("0100-ses-1", list(rcpts), submission_id=sid, klass="transactional")
        await apply(store, bounce(mail, ["gone@example.org"], "Permanent", "General", at=now), now=now)
        await apply(store, complaint(mail, ["angry@example.org"], at=now), now=now)
        await apply(store, bounce(mail, ["full@example.org"], "Transient", "MailboxFull", at=now), now=now)
        await apply(
            store, bounce(mail, ["fine@example.org"], "Undetermined", "Undetermined", at=now), now=now
        )
        await apply(store, delivery(mail, ["fine@example.org"], at=now), now=now)
        # Events about mail this relay has no record of yet: held, unmatched.
        other = ses_mail("0100-ses-elsewhere", ["who@example.org"], klass="bulk")
        await apply(store, bounce(other, ["who@example.org"], "Permanent", "NoEmail", at=now), now=now)
        await apply(store, "this is not JSON", now=now)  # a dead letter
        imported = [
            suppression(f"old{i:04d}@example.net", cause=Cause.IMPORT, reason="from the old list",
                        created_at=now, updated_at=now)
            for i in range(IMPORTED)
        ]  # fmt: skip
        await store.merge_suppressions(imported, actor="cli:admin", action="import", source=Source.IMPORT)
        manual = suppression("ceo@example.org", level=Level.PERMANENT, cause=Cause.MANUAL, reason="asked us")
        await store.merge_suppression(manual, actor="cli:admin")
        await store.merge_suppression(suppression("mistake@example.org"), actor="cli:admin")
        await store.clear_suppressions(ClearRequest("mistake@example.org", None, "cli:admin", "typo"), now)
        await store.set_class_paused("bulk", True, reason="too many complaints", actor="cli:admin", now=now)
    finally:
        await store.close()


def test_migrate_copies_every_table_and_a_second_run_changes_nothing(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(one_hosts_life(data_dir))
    here = counts_here(data_dir)
    assert all(here[t] > 0 for t in COMPARED), here  # the store has rows of every kind

    first = migrate(data_dir, pg_url)
    assert first.returncode == 0, first.stderr
    assert f"suppressions: {here['suppressions']} copied, 0 already there" in first.stdout
    assert "done." in first.stdout
    assert counts_there(pg_url) == here
    # What points at an event points at the same event there (found by its dedupe key).
    for table in ("review", "unmatched_events", "suppression_history"):
        there = pg(pg_url, f"SELECT e.dedupe_key FROM {table} t JOIN events e ON e.id = t.event_id")
        mine = local(data_dir, f"SELECT e.dedupe_key FROM {table} t JOIN events e ON e.id = t.event_id")
        assert sorted(r["dedupe_key"] for r in there) == sorted(r["dedupe_key"] for r in mine), table
        assert mine, table
    [gone] = pg(
        pg_url, "SELECT level, cause, expires_at FROM suppressions WHERE address = 'gone@example.org'"
    )
    assert (gone["level"], gone["cause"]) == (Level.HARD, "bounce") and gone["expires_at"] is not None
    assert pg(pg_url, "SELECT paused FROM class_state WHERE class = 'bulk'") == [{"paused": True}]
    [notice] = pg(pg_url, "SELECT recipient, state FROM notices")
    assert notice == {"recipient": "gone@example.org", "state": "pending"}

    before = snapshot(pg_url)
    again = migrate_json(data_dir, pg_url)
    assert {t: (c["copied"], c["updated"], c["skipped"]) for t, c in again.items()} == {
        t: (0, 0, 0) for t in COMPARED
    }
    assert {t: c["present"] for t, c in again.items()} == here
    assert snapshot(pg_url) == before


def test_a_later_run_brings_what_changed_here_forward_and_nothing_back(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(one_hosts_life(data_dir))
    assert migrate(data_dir, pg_url).returncode == 0
    first = counts_here(data_dir)

    async def more() -> None:
        store = await Store.open(data_dir / "relay.db")
        try:
            now = utcnow()
            [sub] = await store.recent_submissions(now - timedelta(days=1))
            mail = ses_mail("0100-ses-1", ["full@example.org"], submission_id=sub.id, klass="transactional")
            await apply(store, delivery(mail, ["full@example.org"], at=now), now=now)  # bounced stays bounced
            await apply(store, complaint(mail, ["fine@example.org"], at=now), now=now)
            await store.merge_suppression(suppression("new@example.org"), actor="cli:admin")
        finally:
            await store.close()

    asyncio.run(more())
    # Meanwhile in PostgreSQL another relay raised one of the imported entries to permanent.
    pg(pg_url, "UPDATE suppressions SET level = 3, cause = 'manual', reason = 'by hand there' "
               "WHERE address = 'old0000@example.net'")  # fmt: skip
    later = migrate_json(data_dir, pg_url)
    assert later["suppressions"]["copied"] == 2  # new@, and fine@ in its message's class
    assert later["suppressions"]["updated"] == 0 and later["suppressions"]["present"] == first["suppressions"]
    assert later["recipients"]["updated"] == 1  # fine@: bounced -> complained
    assert later["events"]["copied"] == 2 and later["notices"]["copied"] == 0
    assert later["audit"]["copied"] == 1
    [old] = pg(pg_url, "SELECT level, reason FROM suppressions WHERE address = 'old0000@example.net'")
    assert old == {"level": 3, "reason": "by hand there"}  # never lowered by the copy
    statuses = {r["address"]: r["status"] for r in pg(pg_url, "SELECT address, status FROM recipients")}
    assert statuses["fine@example.org"] == "complained" and statuses["full@example.org"] == "bounced"


def test_serve_on_the_migrated_state_refuses_what_the_one_host_had_suppressed(
    relay_factory, tmp_path: Path, pg_url: str
) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(one_hosts_life(data_dir))
    assert migrate(data_dir, pg_url).returncode == 0
    relay = relay_factory(f'[state]\nurl = "{pg_url}"\n', name="data")
    with smtp(relay) as client:
        client.mail("app@example.com")
        code, text = client.rcpt("gone@example.org")
        assert (code, text[:6]) == (550, b"5.1.1 ")
        code, text = client.rcpt("old0999@example.net")
        assert code == 550 and b"from the old list" in text
        assert client.rcpt("ceo@example.org")[0] == 550
        assert client.rcpt("mistake@example.org")[0] == 250  # cleared before the move
        assert client.rcpt("someone@example.org")[0] == 250


def test_migrate_refuses_a_newer_schema_and_bad_targets_and_copies_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(one_hosts_life(data_dir))
    pg(pg_url, "INSERT INTO schema_version (version) VALUES (99)")
    newer = migrate(data_dir, pg_url)
    assert newer.returncode == 1 and "newer than this ses-relay" in newer.stderr
    assert pg(pg_url, "SELECT count(*) AS n FROM suppressions") == [{"n": 0}]

    bad = migrate(data_dir, "mysql://x@db/y")
    assert bad.returncode == 2 and "--to: not a PostgreSQL URL" in bad.stderr
    nowhere = migrate(tmp_path / "no-such-dir", pg_url)
    assert nowhere.returncode == 2 and "no store to copy" in nowhere.stderr
    secret = "postgresql://relay:hunter2-secret@127.0.0.1:9/state"
    down = migrate(data_dir, secret)
    assert down.returncode == 1 and "cannot connect" in down.stderr
    assert "hunter2-secret" not in down.stdout + down.stderr
