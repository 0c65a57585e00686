"""The one write path: every write runs in the commit thread, several share a transaction.

The writes here queue behind a transaction held open by another connection, so that
they share the next commit; each test then checks what a shared commit promises:
each write lands whole or not at all, alone, and its caller hears which.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import relay.store.sqlite
from relay.store import FeedbackTx, Store, StoreError
from relay.timeutil import to_text
from tests.support.entries import NOW as T0
from tests.support.entries import suppression
from tests.support.stores import db_rows, in_store, new_submission

QUEUE_UP = 0.2  # seconds for queued writes to reach the (blocked) commit thread


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer holding the database until the block ends."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield blocker
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def failing_feedback(tx: FeedbackTx) -> None:
    tx.dead_letter("test", "{}", "written, then the unit of work fails")
    raise ValueError("policy bug")


def test_a_failing_write_rolls_back_alone_and_its_caller_hears_its_own_error(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"

    async def scenario(store: Store) -> None:
        with write_lock(db):
            first = asyncio.create_task(store.merge_suppression(suppression("first@example.org")))
            await asyncio.sleep(QUEUE_UP)  # the commit thread now waits for the lock with it
            failing = asyncio.create_task(store.apply_feedback(failing_feedback, T0))
            merged = asyncio.create_task(store.merge_suppression(suppression("b@example.org")))
            accepts = [asyncio.create_task(store.accept(new_submission((f"r{i}@example.org",)), b"x", 1.0))
                       for i in range(5)]  # fmt: skip
            await asyncio.sleep(QUEUE_UP)
            assert not any(t.done() for t in (first, failing, merged, *accepts))
        await first
        with pytest.raises(ValueError, match="policy bug"):
            await failing
        assert (await merged).address == "b@example.org"
        await asyncio.gather(*accepts)

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert db_rows(tmp_path, "SELECT address FROM suppressions ORDER BY address") == [
        ("b@example.org",), ("first@example.org",)
    ]  # fmt: skip
    assert db_rows(tmp_path, "SELECT count(*) FROM submissions") == [(5,)]
    assert db_rows(tmp_path, "SELECT count(*) FROM spool") == [(5,)]


def test_the_writes_that_shared_a_failed_transaction_run_again_and_land_once(tmp_path: Path) -> None:
    """Why a write function may change nothing but the database: it can run twice."""
    db = tmp_path / "relay.db"
    runs: list[int] = []

    def probe(tx: FeedbackTx) -> None:
        runs.append(1)
        tx.dead_letter("test", "{}", "kept")

    async def scenario(store: Store) -> None:
        with write_lock(db):
            first = asyncio.create_task(store.merge_suppression(suppression("first@example.org")))
            await asyncio.sleep(QUEUE_UP)
            kept = asyncio.create_task(store.apply_feedback(probe, T0))
            failing = asyncio.create_task(store.apply_feedback(failing_feedback, T0))
            await asyncio.sleep(QUEUE_UP)
        await first
        await kept
        with pytest.raises(ValueError, match="policy bug"):
            await failing

    in_store(tmp_path, scenario)
    assert len(runs) == 2
    assert db_rows(tmp_path, "SELECT error FROM dead_letters") == [("kept",)]


def test_a_failing_batch_fails_each_of_its_callers_with_store_error_and_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    twin = new_submission(("a@example.org",), sid="0123456789abcdef0123")

    async def scenario(store: Store) -> None:
        with write_lock(db):
            first = asyncio.create_task(store.merge_suppression(suppression("first@example.org")))
            await asyncio.sleep(QUEUE_UP)
            # Two accepts of one id in one batch: the batch's insert fails for both.
            accepts = [asyncio.create_task(store.accept(twin, b"x", 1.0)) for _ in range(2)]
            merged = asyncio.create_task(store.merge_suppression(suppression("b@example.org")))
            await asyncio.sleep(QUEUE_UP)
        await first
        for accepted in accepts:
            with pytest.raises(StoreError, match="store write failed: UNIQUE constraint failed"):
                await accepted
        await merged

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM submissions") == [(0,)]
    assert db_rows(tmp_path, "SELECT count(*) FROM recipients") == [(0,)]
    assert db_rows(tmp_path, "SELECT count(*) FROM suppressions") == [(2,)]


def test_a_locked_database_fails_every_write_in_the_transaction_and_the_next_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.store.sqlite, "BUSY_TIMEOUT_MS", 100)
    db = tmp_path / "relay.db"

    async def scenario(store: Store) -> None:
        with write_lock(db):
            results = await asyncio.gather(
                store.accept(new_submission(("a@example.org",)), b"x", 1.0),
                store.merge_suppression(suppression("b@example.org")),
                store.apply_feedback(lambda tx: tx.dead_letter("test", "{}", "e"), T0),
                store.make_all_due(),
                return_exceptions=True,
            )
        for result in results:
            assert isinstance(result, StoreError) and "database is locked" in str(result), result
        await store.merge_suppression(suppression("b@example.org"))

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM submissions") == [(0,)]
    assert db_rows(tmp_path, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert db_rows(tmp_path, "SELECT address FROM suppressions") == [("b@example.org",)]


def test_a_write_whose_caller_gave_up_before_its_transaction_began_is_not_made(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"

    async def scenario(store: Store) -> None:
        with write_lock(db):
            first = asyncio.create_task(store.merge_suppression(suppression("first@example.org")))
            await asyncio.sleep(QUEUE_UP)
            given_up = asyncio.create_task(store.merge_suppression(suppression("gave-up@example.org")))
            kept = asyncio.create_task(store.merge_suppression(suppression("kept@example.org")))
            await asyncio.sleep(0)
            given_up.cancel()
        await first
        await kept
        assert given_up.cancelled()

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT address FROM suppressions ORDER BY address") == [
        ("first@example.org",), ("kept@example.org",)
    ]  # fmt: skip


def test_an_accept_whose_caller_gave_up_is_committed_all_the_same(tmp_path: Path) -> None:
    """The client may have gone, but the intake's answer does not decide the commit."""
    db = tmp_path / "relay.db"

    async def scenario(store: Store) -> None:
        with write_lock(db):
            first = asyncio.create_task(store.merge_suppression(suppression("first@example.org")))
            await asyncio.sleep(QUEUE_UP)
            accepting = asyncio.create_task(store.accept(new_submission(("a@example.org",)), b"x", 1.0))
            await asyncio.sleep(0)
            accepting.cancel()
        await first

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM submissions") == [(1,)]


def refused_count(tmp_path: Path, address: str) -> int:
    found = db_rows(tmp_path, "SELECT refused_count FROM suppressions WHERE address = ?", address)
    return int(found[0][0])


def test_refusal_counts_go_on_their_own_half_a_second_later(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        await store.merge_suppression(suppression("s@example.org"))
        store.note_refused([("s@example.org", "*")], T0)
        noted = time.monotonic()
        assert refused_count(tmp_path, "s@example.org") == 0  # the 550 did not wait for a write
        while refused_count(tmp_path, "s@example.org") == 0:
            assert time.monotonic() - noted < 5, "the refusal count was never written"
            await asyncio.sleep(0.02)
        assert time.monotonic() - noted >= relay.store.sqlite.WRITE_SOON_SECONDS * 0.9

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT last_refused_at FROM suppressions") == [(to_text(T0),)]


def test_refusal_counts_ride_along_with_the_next_accept_and_are_written_at_close(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        await store.merge_suppression(suppression("s@example.org"))
        store.note_refused([("s@example.org", "*")], T0)
        await store.accept(new_submission(("a@example.org",)), b"x", 1.0)
        assert refused_count(tmp_path, "s@example.org") == 1
        store.note_refused([("s@example.org", "*"), ("s@example.org", "*")], T0)

    in_store(tmp_path, scenario)  # closes at once, well within the half second
    assert refused_count(tmp_path, "s@example.org") == 3


def test_many_concurrent_writes_of_every_kind_all_land(tmp_path: Path) -> None:
    n = 600  # more than two group commits' worth of accepts

    async def scenario(store: Store) -> None:
        subs = [new_submission((f"r{i}@example.org", f"s{i}@example.org"), subject=f"m{i}") for i in range(n)]
        await asyncio.gather(
            *(store.accept(sub, b"x", 1.0) for sub in subs[:300]),
            *(store.merge_suppression(suppression(f"x{i}@example.org")) for i in range(50)),
        )
        await asyncio.gather(
            *(store.accept(sub, b"x", 2.0) for sub in subs[300:]),
            *(store.record_outcome(sub.id, [f"r{i}@example.org"], "sent", now=T0, ses_message_id=f"m-{i}")
              for i, sub in enumerate(subs[:100])),
            *(store.apply_feedback(lambda tx: tx.dead_letter("test", "{}", "e"), T0) for _ in range(20)),
        )  # fmt: skip
        assert await store.spool_stats() == (n, 1.0)

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM submissions") == [(n,)]
    assert db_rows(tmp_path, "SELECT status, count(*) FROM recipients GROUP BY status ORDER BY status") == [
        ("queued", 2 * n - 100), ("sent", 100)
    ]  # fmt: skip
    assert db_rows(tmp_path, "SELECT count(*) FROM suppressions") == [(50,)]
    assert db_rows(tmp_path, "SELECT count(*) FROM dead_letters") == [(20,)]
