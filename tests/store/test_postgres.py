"""The PostgreSQL backend of the shared state: its migrations, its write path (transactions,
retries, per-address locks), notice leases, the suppression change log, and failures that
name the server but never the password. Real PostgreSQL (tests/support/postgres.py).

tests/store/test_feedback_apply.py and test_late_events.py run the store's behaviour
against both backends; this file is what only PostgreSQL has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from relay.clearing import ClearRequest
from relay.config import StateConfig
from relay.store import NoticeRecord, Store, StoreError, probe_state
from relay.store.pg_schema import MIGRATIONS, NOTIFY_CHANNEL
from relay.store.postgres import PostgresBackend
from relay.store.shared import NOTICE_LEASE
from relay.suppression import Level
from relay.suppression_history import Source
from relay.timeutil import utcnow
from tests.conftest import free_port
from tests.support.entries import NOW, suppression
from tests.support.postgres import PostgresServer
from tests.support.sns_sqs import bounce, ses_mail
from tests.support.stores import apply, new_submission, shipped

WAIT = 0.3  # long enough for a blocked write to have reached its lock


def sql(url: str, statement: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


async def host(tmp_path: Path, url: str, name: str = "a", **kw: Any) -> Store:
    """A relay's store: its own data dir, the shared state at `url`."""
    return await Store.open(tmp_path / name / "relay.db", state=StateConfig(url=url, **kw))


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


# -- schema and migrations ---------------------------------------------------------------------


def test_relays_starting_at_once_on_an_empty_database_migrate_it_once(tmp_path: Path, pg_empty_url) -> None:
    async def scenario() -> None:
        stores = await asyncio.gather(*(host(tmp_path, pg_empty_url, f"h{i}") for i in range(4)))
        for store in stores:
            await store.close()

    assert probe_state(tmp_path / "relay.db", StateConfig(url=pg_empty_url)).schema_version == 0
    run(scenario)
    versions = [r["version"] for r in sql(pg_empty_url, "SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    found = probe_state(tmp_path / "relay.db", StateConfig(url=pg_empty_url))
    assert (found.reachable, found.schema_version, found.problems) == (True, len(MIGRATIONS), [])


def test_a_schema_newer_than_this_relay_is_refused(tmp_path: Path, pg_url: str) -> None:
    sql(pg_url, "INSERT INTO schema_version (version) VALUES (%s)", len(MIGRATIONS) + 1)
    with pytest.raises(StoreError, match="newer than this ses-relay"):
        run(lambda: host(tmp_path, pg_url))
    assert "upgrade ses-relay" in probe_state(tmp_path, StateConfig(url=pg_url)).problems[0]


# -- failures name the server, never the password -------------------------------------------


def test_an_unreachable_server_is_a_store_error_that_names_it_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://relay:s3cret-pass@127.0.0.1:{free_port()}/state"
    with pytest.raises(StoreError) as caught:
        run(lambda: host(tmp_path, url, connect_timeout=1))
    message = str(caught.value)
    assert "127.0.0.1" in message and "/state" in message and "s3cret-pass" not in message
    assert not (tmp_path / "a" / "relay.db").exists()  # nothing local was made for a state it cannot reach
    found = probe_state(tmp_path, StateConfig(url=url, connect_timeout=1))
    assert not found.reachable and "s3cret-pass" not in f"{found}"


def test_losing_the_server_fails_operations_and_they_work_again_once_it_is_back(tmp_path: Path) -> None:
    server = PostgresServer.started()  # not under pytest's tmp dir: see tests/support/postgres.py
    try:
        url = server.database().replace("postgres@", "postgres:hunter2-secret@")  # trust auth ignores it

        async def scenario() -> None:
            store = await host(tmp_path, url, connect_timeout=2)
            try:
                await store.merge_suppression(suppression("before@example.org"))
                server.stop()  # fast: the test server runs without fsync, so "immediate" may lose commits
                with pytest.raises(StoreError) as caught:
                    await store.merge_suppression(suppression("during@example.org"))
                assert "127.0.0.1" in str(caught.value) and "hunter2-secret" not in str(caught.value)
                with pytest.raises(StoreError):
                    await store.list_suppressions(now=NOW)
                server.start()
                deadline = time.monotonic() + 20
                while True:
                    try:
                        await store.merge_suppression(suppression("after@example.org"))
                        break
                    except StoreError:
                        assert time.monotonic() < deadline, "the pool did not reconnect"
                        await asyncio.sleep(0.2)
                found = [e.address for e in await store.list_suppressions(now=NOW)]
                assert found == ["after@example.org", "before@example.org"]
            finally:
                await store.close()

        run(scenario)
    finally:
        server.cleanup()


def test_a_connection_the_server_dropped_is_replaced_not_used(tmp_path: Path, pg_url: str) -> None:
    async def scenario() -> None:
        store = await host(tmp_path, pg_url)
        try:
            await store.merge_suppression(suppression("a@example.org"))
            killed = sql(
                pg_url,
                "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            assert killed and all(r["ok"] for r in killed)
            await store.merge_suppression(suppression("b@example.org"))
            assert len(await store.list_suppressions(now=NOW)) == 2
        finally:
            await store.close()

    run(scenario)


# -- the write path: per-address locks, retries --------------------------------------------------


LOCKED_BOUNCE = bounce(
    ses_mail("0100lock-1", ["locked@example.org"], tags=False), ["locked@example.org"], "Permanent", "General"
)
OPERATIONS: dict[str, Callable[[Store], Any]] = {
    "merge": lambda s: s.merge_suppression(suppression("locked@example.org")),
    "clear": lambda s: s.clear_suppressions(ClearRequest("locked@example.org", None, "t"), NOW),
    "clear with a daily limit": lambda s: s.clear_suppressions(
        ClearRequest("locked@example.org", None, "t", max_per_day=5), NOW
    ),
    "feedback batch": lambda s: apply(s, LOCKED_BOUNCE, now=utcnow()),
    "the sender's outcome, shipped": lambda s: _shipped_after(
        s.record_outcome(
            "0123456789abcdef0123", ["locked@example.org"], "sent", now=NOW, ses_message_id="0100lock-2"
        ), s
    ),
    "an accept's refusal counts, shipped": lambda s: _shipped_after(
        s.accept(
            dataclasses.replace(new_submission(("ok@example.org",)), refused=(("locked@example.org", "*"),)),
            b"x", 1.0,
        ), s
    ),
}


async def _shipped_after(write: Any, store: Store) -> None:
    """A write committed locally (it waits on no lock), then shipped to PostgreSQL (which does)."""
    await write
    await shipped(store)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_write_about_an_address_waits_for_its_lock_and_others_do_not(
    tmp_path: Path, pg_url: str, operation: str
) -> None:
    async def scenario() -> None:
        store = await host(tmp_path, pg_url)
        try:
            with psycopg.connect(pg_url) as holder:  # another host's transaction, about the address
                holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('locked@example.org', 0))")
                blocked = asyncio.create_task(OPERATIONS[operation](store))
                await asyncio.sleep(WAIT)
                assert not blocked.done()
                await store.merge_suppression(suppression("other@example.org"))  # another address: no wait
                assert not blocked.done()
                holder.commit()
                await asyncio.wait_for(blocked, 10)
        finally:
            await store.close()

    run(scenario)


def test_concurrent_merges_from_two_hosts_never_downgrade(tmp_path: Path, pg_url: str) -> None:
    """Read, merge, write: without the per-address lock a weaker entry could land last."""
    rng = random.Random(7)
    addresses = [f"hot{i}@example.org" for i in range(3)]
    merges = [
        suppression(rng.choice(addresses), level=rng.choice(list(Level)),
                    expires_at=NOW + timedelta(days=rng.randint(1, 30)), updated_at=NOW)
        for _ in range(240)
    ]  # fmt: skip

    async def scenario() -> None:
        a, b = await host(tmp_path, pg_url, "a"), await host(tmp_path, pg_url, "b")
        try:
            await asyncio.gather(*((a if i % 2 else b).merge_suppression(m) for i, m in enumerate(merges)))
            for address in addresses:
                mine = [m for m in merges if m.address == address]
                [entry] = await a.suppressions_of(address)
                assert entry.level == max(m.level for m in mine)
                assert entry.expires_at == max(m.expires_at for m in mine if m.expires_at)
        finally:
            await a.close()
            await b.close()

    run(scenario)


def test_a_write_chosen_as_a_deadlock_victim_runs_again_and_lands(pg_url: str) -> None:
    """Write functions may run more than once: a deadlock or serialization failure retries them."""
    sql(pg_url, "INSERT INTO class_state (class, changed_at, changed_by) VALUES ('a', now(), 't'), "
        "('b', now(), 't')")  # fmt: skip
    runs: list[int] = []

    def crosswise(db: Any) -> None:
        runs.append(1)
        db.execute("UPDATE class_state SET reason = 'store' WHERE class = 'b'")
        db.execute("UPDATE class_state SET reason = 'store' WHERE class = 'a'")

    other = psycopg.connect(pg_url)
    other.execute("SET deadlock_timeout = '30s'")  # the store's write is the one that detects it
    other.execute("UPDATE class_state SET reason = 'other' WHERE class = 'a'")

    def finish_other() -> None:
        time.sleep(WAIT)  # the store's write now waits for row a
        other.execute("UPDATE class_state SET reason = 'other' WHERE class = 'b'")  # the cycle
        other.commit()

    async def scenario() -> None:
        backend = await PostgresBackend.open(pg_url)
        try:
            thread = threading.Thread(target=finish_other)
            thread.start()
            await asyncio.wait_for(backend.write(crosswise), 20)
            thread.join(10)
        finally:
            await backend.close()

    try:
        run(scenario)
    finally:
        other.close()
    assert len(runs) == 2
    assert sql(pg_url, "SELECT class, reason FROM class_state ORDER BY 1") == [
        {"class": "a", "reason": "store"}, {"class": "b", "reason": "store"}
    ]  # fmt: skip


def test_two_consumers_applying_the_same_events_apply_each_once(tmp_path: Path, pg_url: str) -> None:
    docs = [
        bounce(ses_mail(f"0100twice-{i}", [f"r{i}@example.org"], tags=False), [f"r{i}@example.org"],
               "Permanent", "General")
        for i in range(20)
    ]  # fmt: skip

    async def scenario() -> None:
        a, b = await host(tmp_path, pg_url, "a"), await host(tmp_path, pg_url, "b")
        try:
            now = utcnow()
            results = await asyncio.gather(*(apply(s, doc, now=now) for doc in docs for s in (a, b)))
            assert sum(r.events for r in results) == 20 and sum(r.duplicates for r in results) == 20
            assert len(await a.events()) == 20
            assert len(await a.list_suppressions(now=now)) == 20
        finally:
            await a.close()
            await b.close()

    run(scenario)


# -- notice leases -----------------------------------------------------------------------------


def _notice(i: int) -> NoticeRecord:
    return NoticeRecord(
        dedupe_key=f"s{i}:r{i}@example.org:permanent_bounce", reason="permanent_bounce",
        recipient=f"r{i}@example.org", sender="app@example.com",
    )  # fmt: skip


def test_a_notice_is_leased_to_one_host_and_a_dead_hosts_lease_runs_out(tmp_path: Path, pg_url: str) -> None:
    async def scenario() -> None:
        a, b = await host(tmp_path, pg_url, "a"), await host(tmp_path, pg_url, "b")
        try:
            await a.apply_feedback(lambda tx: [tx.add_notice(_notice(i)) for i in range(3)], NOW)
            leased = await a.due_notices(NOW)
            assert len(leased) == 3
            assert await b.due_notices(NOW) == [] and await a.due_notices(NOW) == []  # leased: nobody
            await a.settle_notice(leased[0].id, "sent", now=NOW)
            await a.settle_notice(leased[1].id, "pending", now=NOW, next_attempt_at=NOW, error="try again")
            again = await b.due_notices(NOW)  # settled as due again: the lease ended with it
            assert [n.id for n in again] == [leased[1].id]
            await b.settle_notice(leased[1].id, "sent", now=NOW)
            # `a` dies holding the third; its lease runs out, and `b` takes it over.
            assert await b.due_notices(NOW + NOTICE_LEASE - timedelta(seconds=1)) == []
            later = await b.due_notices(NOW + NOTICE_LEASE + timedelta(seconds=1))
            assert [n.id for n in later] == [leased[2].id]
            owners = sql(pg_url, "SELECT lease_owner FROM notices WHERE id = %s", leased[2].id)
            assert owners == [{"lease_owner": b.host_id}] and b.host_id != a.host_id
            assert [n.state for n in await a.notices()] == ["sent", "sent", "pending"]
        finally:
            await a.close()
            await b.close()

    run(scenario)


def test_hosts_claiming_at_once_share_the_due_notices_without_overlap(tmp_path: Path, pg_url: str) -> None:
    async def scenario() -> None:
        hosts = [await host(tmp_path, pg_url, f"h{i}") for i in range(3)]
        try:
            await hosts[0].apply_feedback(lambda tx: [tx.add_notice(_notice(i)) for i in range(60)], NOW)
            claims = await asyncio.gather(*(h.due_notices(NOW, limit=7) for _ in range(4) for h in hosts))
            ids = [n.id for claim in claims for n in claim]
            assert len(ids) == len(set(ids)) == 60
        finally:
            for h in hosts:
                await h.close()

    run(scenario)


# -- the change log and its notifications ---------------------------------------------------


def test_each_suppression_change_is_logged_and_notified_once_per_commit(tmp_path: Path, pg_url: str) -> None:
    listener = psycopg.connect(pg_url, autocommit=True)
    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def heard() -> list[str]:
        return [n.payload for n in listener.notifies(timeout=0.5)]

    def changes() -> list[tuple[str, str]]:
        rows = sql(pg_url, "SELECT * FROM suppression_changes ORDER BY seq")
        return [(r["address"], r["class"]) for r in rows]

    async def scenario() -> None:
        store = await host(tmp_path, pg_url)
        try:
            await store.merge_suppressions(
                [suppression(f"{n}@example.org") for n in ("a", "b", "c")], actor="t", action="import",
                source=Source.IMPORT,
            )
            assert heard() == ["suppressions"]  # one commit, one notification
            assert changes() == [("a@example.org", "*"), ("b@example.org", "*"), ("c@example.org", "*")]
            await store.merge_suppression(suppression("a@example.org", updated_at=NOW + timedelta(hours=1)))
            store.note_refused([("b@example.org", "*")], NOW)  # counters only: no change
            await shipped(store)
            assert (await store.suppressions_of("b@example.org"))[0].refused_count == 1
            await store.clear_suppressions(ClearRequest("c@example.org", None, "t"), NOW)
            assert changes()[3:] == [("a@example.org", "*"), ("c@example.org", "*")]
            assert heard() == ["suppressions", "suppressions"]
            await store.set_class_paused("bulk", True, reason="r", actor="t", now=NOW)
            assert heard() == ["class_state"]
        finally:
            await store.close()

    try:
        run(scenario)
    finally:
        listener.close()
    seqs = [r["seq"] for r in sql(pg_url, "SELECT seq FROM suppression_changes ORDER BY seq")]
    assert seqs == sorted(set(seqs)) and len(seqs) == 5


def test_a_reader_of_changes_after_its_last_seq_misses_none_under_concurrent_commits(pg_url: str) -> None:
    """Change numbers are handed out in commit order: `seq > last` never skips a late commit."""
    stop = threading.Event()
    seen: set[int] = set()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            with psycopg.connect(pg_url) as conn:
                for _ in range(40):
                    conn.execute(
                        "INSERT INTO suppressions (address, class, level, cause, reason, created_at, "
                        "updated_at) VALUES (%s, '*', 2, 'bounce', 'r', now(), clock_timestamp()) "
                        "ON CONFLICT (address, class) DO UPDATE SET updated_at = excluded.updated_at",
                        (f"w{n}-{rng.randrange(5)}@example.org",),
                    )
                    time.sleep(rng.random() * 0.01)  # commits land in another order than they began
                    conn.commit()
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        last = 0
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute("SELECT seq FROM suppression_changes WHERE seq > %s ORDER BY seq", [last])
                for (seq,) in rows.fetchall():
                    seen.add(seq)
                    last = seq

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    watching = threading.Thread(target=reader)
    watching.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    time.sleep(0.2)
    stop.set()
    watching.join(10)
    assert not errors
    everything = {r["seq"] for r in sql(pg_url, "SELECT seq FROM suppression_changes")}
    assert len(everything) == 160 and seen == everything


# -- a store for the shared state alone --------------------------------------------------------


def test_a_store_opened_for_the_shared_state_alone_has_no_spool(tmp_path: Path, pg_url: str) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "relay.db", state=StateConfig(url=pg_url), spool=False)
        try:
            await store.merge_suppression(suppression("a@example.org"))
            assert len(await store.list_suppressions(now=NOW)) == 1
            with pytest.raises(StoreError, match="shared state only"):
                await store.due(time.time(), 10)
            with pytest.raises(StoreError, match="shared state only"):
                await store.accept(new_submission(("x@example.org",)), b"x", 1.0)
        finally:
            await store.close()

    run(scenario)
    assert not (tmp_path / "relay.db").exists()
