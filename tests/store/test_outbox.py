"""The outbox: with a shared state, local commits first, then shipped to PostgreSQL.

An accept, an outcome and the refusal counts commit to the data dir's file with an
outbox row; shipping applies the rows to PostgreSQL in order and deletes them here.
Each test breaks something real (a lock that makes the local delete fail after
PostgreSQL committed, a PostgreSQL server stopped) and checks that nothing is lost or
counted twice. Real PostgreSQL, real SQLite files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.config import StateConfig
from relay.ops.shipper import StateShipper
from relay.store import NoticeRecord, Store, StoreError, probe_state
from relay.store.outbox import SHIP_ADDRESSES
from relay.store.records import OUTBOX_STUCK_AFTER
from relay.timeutil import to_text, utcnow
from tests.support.entries import NOW, suppression
from tests.support.postgres import PostgresServer
from tests.support.sns_sqs import delivery, ses_mail
from tests.support.stores import Place, apply, new_submission, shipped

NOTICE = NoticeRecord(
    dedupe_key="s:gone@example.org:suppressed_at_data", reason="suppressed_at_data",
    recipient="gone@example.org", sender="app@example.com",
)  # fmt: skip


@pytest.fixture
def place(tmp_path: Path, pg_url: str) -> Place:
    return Place(tmp_path, pg_url)


def run(place: Place, scenario: Any, **state: Any) -> None:
    """`scenario` against a store of the place; `state`: more [state] settings."""

    async def go() -> None:
        config = StateConfig(url=place.state_url or "", **state)
        store = await Store.open(place.data_dir / "relay.db", state=config)
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(go())


def local(place: Place, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(place.data_dir / "relay.db", timeout=10)
    try:
        rows = list(db.execute(sql, params))
        db.commit()
        return rows
    finally:
        db.close()


def shared_state(place: Place) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the outbox writes in PostgreSQL, to compare before and after."""
    return {
        "submissions": [
            tuple(r) for r in place.rows("SELECT id, subject, mail_from FROM submissions ORDER BY id")
        ],
        "recipients": [
            tuple(r)
            for r in place.rows(
                "SELECT submission_id, address, status, ses_message_id, detail, ordinal FROM recipients "
                "ORDER BY submission_id, address"
            )
        ],
        "notices": [
            tuple(r) for r in place.rows("SELECT dedupe_key, reason FROM notices ORDER BY dedupe_key")
        ],
        "refused": [
            tuple(r)
            for r in place.rows("SELECT address, refused_count, last_refused_at FROM suppressions ORDER BY 1")
        ],
    }


async def sent(store: Store, sid: str, address: str, ses_id: str) -> None:
    await store.record_outcome(sid, [address], "sent", now=NOW, ses_message_id=ses_id)


def refusing(recipients: tuple[str, ...], refused: tuple[tuple[str, str], ...], **kw: Any) -> Any:
    """A submission whose DATA refused some recipients on suppressions (counted with the accept)."""
    return dataclasses.replace(new_submission(recipients, **kw), refused=refused)


# -- shipping ------------------------------------------------------------------------------------


def test_an_accept_is_local_until_shipped_then_in_postgresql_with_its_notices_and_counts(
    place: Place,
) -> None:
    sub = refusing(("a@example.org", "b@example.org"), (("gone@example.org", "*"),), at=NOW)

    async def scenario(store: Store) -> None:
        await store.merge_suppression(suppression("gone@example.org"))
        await store.accept(sub, b"Subject: hi\r\n\r\nhello\r\n", time.time(), [NOTICE])
        assert [i.submission.id for i in await store.due(time.time() + 1, 10)] == [sub.id]  # sendable now
        assert await store.submission(sub.id) is None  # not shipped yet
        rows, oldest = await store.outbox_backlog()
        assert rows == 1 and oldest is not None and abs(oldest - time.time()) < 60
        assert await shipped(store) == 1
        recorded = await store.submission(sub.id)
        assert recorded is not None and [r.status for r in recorded.recipients] == ["queued", "queued"]
        assert [n.record.dedupe_key for n in await store.notices()] == [NOTICE.dedupe_key]
        [entry] = await store.suppressions_of("gone@example.org")
        assert (entry.refused_count, entry.last_refused_at) == (1, NOW)
        assert await store.outbox_backlog() == (0, None)

    run(place, scenario)
    assert local(place, "SELECT count(*) FROM outbox") == [(0,)]
    assert local(place, "SELECT submission_id FROM spool") == [(sub.id,)]  # the bytes stay local
    assert local(place, "SELECT count(*) FROM notices") == [(0,)]


def test_a_batch_shipped_again_after_the_local_delete_failed_changes_nothing(place: Place) -> None:
    """PostgreSQL commits the batch, then the local delete fails (the file is locked by another
    writer): the rows stay, ship again, and nothing is doubled, refusal counts included."""
    subs = [
        refusing((f"r{i}@example.org", "gone@example.org"), (("gone@example.org", "*"),), at=NOW)
        for i in range(5)
    ]

    async def scenario(store: Store) -> None:
        await store.merge_suppression(suppression("gone@example.org"))
        await store.merge_suppression(suppression("old@example.org"))
        for i, sub in enumerate(subs):
            await store.accept(sub, b"x", time.time(), [dataclasses.replace(NOTICE, dedupe_key=f"n{i}")])
        for i, sub in enumerate(subs[:3]):
            await store.record_outcome(sub.id, [f"r{i}@example.org"], "sent", now=NOW, ses_message_id=f"m{i}")
        store.note_refused([("old@example.org", "*")] * 4, NOW)
        await store.record_outcome(subs[3].id, ["r3@example.org"], "failed", now=NOW, detail="refused")
        waiting = local(place, "SELECT id FROM outbox ORDER BY id")
        assert len(waiting) == 5 + 3 + 1 + 1

        blocker = sqlite3.connect(place.data_dir / "relay.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: the delete cannot happen
        try:
            with pytest.raises(StoreError):
                await store.ship_outbox()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert local(place, "SELECT id FROM outbox ORDER BY id") == waiting  # kept, to ship again
        once = shared_state(place)
        assert len(once["submissions"]) == 5 and len(once["notices"]) == 5
        assert once["refused"] == [
            ("gone@example.org", 5, to_text(NOW)), ("old@example.org", 4, to_text(NOW))
        ]  # fmt: skip

        await shipped(store)
        assert shared_state(place) == once
        assert local(place, "SELECT count(*) FROM outbox") == [(0,)]
        sent = sorted((r[1], r[2], r[3]) for r in once["recipients"] if r[1] != "gone@example.org")
        assert sent == [
            ("r0@example.org", "sent", "m0"), ("r1@example.org", "sent", "m1"),
            ("r2@example.org", "sent", "m2"), ("r3@example.org", "failed", None),
            ("r4@example.org", "queued", None),
        ]  # fmt: skip

    run(place, scenario, connect_timeout=timedelta(seconds=2))


def test_two_hosts_counts_add_up_though_their_outbox_ids_are_the_same(tmp_path: Path, pg_url: str) -> None:
    """Refusal counts are claimed per (host, outbox id): host b's row 1 is not host a's."""

    async def scenario() -> None:
        a = await Place(tmp_path / "a", pg_url).open()
        b = await Place(tmp_path / "b", pg_url).open()
        try:
            await a.merge_suppression(suppression("gone@example.org"))
            for store, n in ((a, 2), (b, 3)):
                store.note_refused([("gone@example.org", "*")] * n, NOW)
                await shipped(store)
            assert a.host_id != b.host_id
            [entry] = await b.suppressions_of("gone@example.org")
            assert entry.refused_count == 5
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_rows_ship_in_commit_order_across_batches_of_any_size(place: Place) -> None:
    """Outcomes after their accepts, in small batches and big ones: the same statuses either way."""
    n = 30

    async def scenario(store: Store) -> None:
        subs = [new_submission((f"a{i}@example.org", f"b{i}@example.org"), at=NOW) for i in range(n)]
        for i, sub in enumerate(subs):
            await store.accept(sub, b"x", time.time())
            if i % 3 == 0:  # now and then an outcome right behind its accept, or a later one's
                await store.record_outcome(
                    sub.id, [f"a{i}@example.org"], "sent", now=NOW, ses_message_id=f"m{i}"
                )
        for i, sub in enumerate(subs):
            await store.record_outcome(sub.id, [f"b{i}@example.org"], "sent", now=NOW, ses_message_id=f"n{i}")
        shipped_rows = []
        while True:
            done = await store.ship_outbox(max_rows=4)
            shipped_rows.append(done.rows)
            if not done.more:
                break
        assert sum(shipped_rows) == n + n // 3 + n and max(shipped_rows) == 4
        for i, sub in enumerate(subs):
            recorded = await store.submission(sub.id)
            assert recorded is not None
            assert [(r.address, r.status) for r in recorded.recipients] == [
                (f"a{i}@example.org", "sent" if i % 3 == 0 else "queued"), (f"b{i}@example.org", "sent")
            ]  # fmt: skip

    run(place, scenario)


def test_a_batch_locks_a_bounded_number_of_addresses(place: Place) -> None:
    """PostgreSQL's lock table is finite: a batch stops before it would lock too many addresses."""
    wide = tuple(f"r{i}@example.org" for i in range(50))

    async def scenario(store: Store) -> None:
        subs = [new_submission(wide, at=NOW) for _ in range(SHIP_ADDRESSES // 50 + 5)]
        for i, sub in enumerate(subs):
            await store.accept(sub, b"x", time.time())
            await store.record_outcome(sub.id, list(wide), "sent", now=NOW, ses_message_id=f"m{i}")
        first = await store.ship_outbox()
        assert first.more and first.rows < 2 * len(subs)
        await shipped(store)
        statuses = {r[0] for r in place.rows("SELECT DISTINCT status FROM recipients")}
        assert statuses == {"sent"}

    run(place, scenario)


def test_an_event_that_came_before_the_ses_id_is_matched_when_the_outcome_ships(place: Place) -> None:
    addr, ses_id = "early@example.org", "0100early-0001-000000"

    async def scenario(store: Store) -> None:
        sub = new_submission((addr,), at=utcnow())
        await store.accept(sub, b"x", time.time())
        await shipped(store)
        doc = delivery(ses_mail(ses_id, [addr], submission_id=sub.id, klass="transactional"), [addr])
        assert (await apply(store, doc, now=utcnow())).events == 1
        assert len(place.rows("SELECT * FROM unmatched_events")) == 1  # held: no recipient has the id
        await store.record_outcome(sub.id, [addr], "sent", now=utcnow(), ses_message_id=ses_id)
        assert place.rows("SELECT status FROM recipients")[0]["status"] == "queued"  # not shipped yet
        await shipped(store)
        [row] = place.rows("SELECT status, ses_message_id FROM recipients")
        assert (row["status"], row["ses_message_id"]) == ("delivered", ses_id)
        assert place.rows("SELECT * FROM unmatched_events") == []

    run(place, scenario)


# -- PostgreSQL away -----------------------------------------------------------------------------


def test_with_postgresql_down_the_intake_and_sender_go_on_and_the_backlog_ships_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PostgresServer.started()  # not under pytest's tmp dir: see tests/support/postgres.py
    try:
        place = Place(tmp_path, server.database())
        subs = [new_submission((f"r{i}@example.org",), at=NOW) for i in range(20)]

        async def scenario(store: Store) -> None:
            await store.merge_suppression(suppression("gone@example.org"))
            shipper = StateShipper(store)
            stop = asyncio.Event()
            store.outbox_written = shipper.wake
            running = asyncio.create_task(shipper.run(stop))
            try:
                await store.accept(subs[0], b"x", time.time())
                await wait_for(lambda: store.outbox_backlog(), (0, None))
                server.stop()  # fast: the test server runs without fsync
                for i, sub in enumerate(subs[1:], start=1):
                    await store.accept(sub, b"x", time.time())  # local commits: no PostgreSQL needed
                    await store.record_outcome(
                        sub.id, [f"r{i}@example.org"], "sent", now=NOW, ses_message_id=f"m{i}"
                    )
                store.note_refused([("gone@example.org", "*")] * 3, NOW)
                await asyncio.sleep(3)  # several failed tries
                rows, oldest = await store.outbox_backlog()
                assert rows >= 2 * 19 and oldest is not None
                assert shipper.failing_since is not None
                server.start()
                await wait_for(lambda: store.outbox_backlog(), (0, None), timeout=30)
            finally:
                stop.set()
                await running
            assert shipper.failing_since is None
            recorded = {r["id"] for r in place.rows("SELECT id FROM submissions")}
            assert recorded == {s.id for s in subs}
            assert {
                r["status"]
                for r in place.rows("SELECT status FROM recipients WHERE address <> 'r0@example.org'")
            } == {"sent"}
            [entry] = place.rows("SELECT refused_count FROM suppressions")
            assert entry["refused_count"] == 3

        with caplog.at_level(logging.INFO, logger="ses_relay.shipper"):
            run(place, scenario, connect_timeout=timedelta(seconds=1))
        said = [r.getMessage() for r in caplog.records if r.name == "ses_relay.shipper"]
        assert len([m for m in said if m.startswith("cannot ship")]) == 1, said
        assert len([m for m in said if m.startswith("shipping to the shared state again")]) == 1, said
    finally:
        server.cleanup()


def test_a_row_that_cannot_be_shipped_holds_the_backlog_and_the_shipper_says_so_once(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """Never skipped (that would lose what it records), never a crash of the shipper: it retries,
    the backlog waits, one warning with the error says why."""

    async def scenario(store: Store) -> None:
        await store.accept(new_submission(("a@example.org",), at=NOW), b"x", time.time())
        local(place, "INSERT INTO outbox (kind, body, created_at) VALUES ('from-the-future', '{}', 0)")
        await store.accept(new_submission(("b@example.org",), at=NOW), b"x", time.time())
        shipper, stop = StateShipper(store), asyncio.Event()
        running = asyncio.create_task(shipper.run(stop))
        await asyncio.sleep(2)  # several tries
        stop.set()
        await running
        assert shipper.shipped == 1 and shipper.failing_since is not None
        assert (await store.outbox_backlog())[0] == 2  # the bad row and the one behind it
        assert len(place.rows("SELECT id FROM submissions")) == 1  # the one before it shipped

    with caplog.at_level(logging.INFO, logger="ses_relay.shipper"):
        run(place, scenario)
    [said] = [r for r in caplog.records if r.name == "ses_relay.shipper"]
    assert "2 row(s) wait" in said.getMessage() and "outbox row 2 (from-the-future)" in said.getMessage()


async def wait_for(read: Any, expected: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := await read()) != expected:
        assert time.monotonic() < deadline, f"still {found}, not {expected}"
        await asyncio.sleep(0.1)


# -- pruning and checking ------------------------------------------------------------------------


def test_local_copies_go_once_sent_and_shipped_and_the_rest_stay(place: Place) -> None:
    done, spooled, unshipped = (
        new_submission((f"{n}@example.org",), at=NOW) for n in ("done", "spooled", "unshipped")
    )

    async def scenario(store: Store) -> None:
        for sub in (done, spooled, unshipped):
            await store.accept(sub, b"x", time.time())
        await store.record_outcome(done.id, ["done@example.org"], "sent", now=NOW, ses_message_id="m1")
        await shipped(store)
        await store.record_outcome(
            unshipped.id, ["unshipped@example.org"], "sent", now=NOW, ses_message_id="m2"
        )
        assert await store.prune_shipped(NOW, 100) == 0  # changed at NOW: not before it
        assert await store.prune_shipped(NOW + timedelta(seconds=1), 100) == 1
        assert await store.last_sent_at() == NOW  # the latest send is still known here
        await shipped(store)
        assert await store.prune_shipped(NOW + timedelta(seconds=1), 100) == 1
        for sub in (done, spooled, unshipped):  # PostgreSQL keeps them all
            assert await store.submission(sub.id) is not None

    run(place, scenario)
    assert local(place, "SELECT id FROM submissions") == [(spooled.id,)]
    assert local(place, "SELECT submission_id FROM recipients") == [(spooled.id,)]


def test_state_check_reports_the_backlog_and_a_stuck_one_is_a_problem(place: Place) -> None:
    async def scenario(store: Store) -> None:
        await store.accept(new_submission(("a@example.org",), at=NOW), b"x", time.time())

    run(place, scenario)
    config = StateConfig(url=place.state_url or "")
    found = probe_state(place.data_dir / "relay.db", config)
    assert found.outbox_backlog == 1 and found.outbox_oldest_age_seconds is not None
    assert found.outbox_oldest_age_seconds < 60 and not [p for p in found.problems if "outbox" in p]
    local(place, "UPDATE outbox SET created_at = created_at - ?", OUTBOX_STUCK_AFTER + 60)
    stuck = probe_state(place.data_dir / "relay.db", config)
    assert [p for p in stuck.problems if "1 outbox row(s) not shipped" in p]
    assert probe_state(place.data_dir / "nowhere.db", config).outbox_backlog is None
