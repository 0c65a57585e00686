"""Each host's local mirror of the shared suppressions and class pauses (relay/store/mirror.py,
relay/ops/state_mirror.py), against a real PostgreSQL: a first copy, catching up, clears,
class pauses, gaps (missed notifications, a pruned change log, a restored database), a
server that goes away, and a one-host store that must not be overwritten.

Host A writes through its Store (the path every write takes); host B's mirror copies, and
B's intake lookups (`suppressions_for(..., mirror=True)`) answer from the copy.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from relay.clearing import ClearRequest
from relay.config import StateConfig
from relay.ops.state_mirror import NotAMirror, StateMirror
from relay.store import Store, StoreError, mirror
from relay.store.mirror import COLUMNS, MirrorState
from relay.store.records import MirrorProbe
from relay.suppression import Cause, Level
from relay.suppression_history import Source
from relay.timeutil import to_text, utcnow
from tests.support.entries import NOW, suppression
from tests.support.postgres import PostgresServer

ODD = [  # byte order differs from most collations': the copy's key ranges must agree on both sides
    "Zed@example.org", "alice@example.org", "Émile@example.org", "émile@example.org", "a.b@example.org",
    "a@example.org", "a_b@example.org", "b@EXAMPLE.org", "ñ@example.org", "z@example.org", "0@example.org",
]  # fmt: skip


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def shared_rows(url: str) -> list[tuple[Any, ...]]:
    """Every suppression in PostgreSQL, as the local table keeps it (times as stored text)."""
    rows = sql(url, f"SELECT {', '.join(COLUMNS)} FROM suppressions")
    out = [tuple(to_text(v) if hasattr(v, "tzinfo") and v is not None else v for v in r) for r in rows]
    return sorted(out, key=lambda r: (r[0].encode(), r[1].encode()))


def local_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "relay.db")
    try:
        return list(db.execute(f"SELECT {', '.join(COLUMNS)} FROM suppressions ORDER BY address, class"))
    finally:
        db.close()


def local_classes(data_dir: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "relay.db")
    try:
        return list(db.execute("SELECT class, paused, reason FROM class_state ORDER BY class"))
    finally:
        db.close()


class Hosts:
    """Host A (writes) and host B (its mirror), each with a data dir of its own."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.state = StateConfig(url=url)
        self.a: Store
        self.b: Store
        self.mirror: StateMirror

    @property
    def b_dir(self) -> Path:
        return self.tmp_path / "b"

    async def open(self) -> None:
        self.a = await Store.open(self.tmp_path / "a" / "relay.db", state=self.state)
        self.b = await Store.open(self.b_dir / "relay.db", state=self.state)
        self.mirror = StateMirror(self.b, self.state)

    async def close(self) -> None:
        await self.mirror.close()
        await self.a.close()
        await self.b.close()

    async def refused_at_b(self, address: str) -> list[str]:
        """The classes B's intake refuses `address` for, from its mirror."""
        found = await self.b.suppressions_for([address], utcnow(), mirror=True)
        return sorted(e.klass for e in found[address])

    async def synced(self) -> None:
        while await self.mirror.sync():
            pass


def with_hosts(tmp_path: Path, url: str, scenario: Callable[[Hosts], Awaitable[None]]) -> None:
    async def go() -> None:
        hosts = Hosts(tmp_path, url)
        await hosts.open()
        try:
            await scenario(hosts)
        finally:
            await hosts.close()

    asyncio.run(go())


def max_seq(url: str) -> int:
    return int(sql(url, "SELECT coalesce(max(seq), 0) FROM suppression_changes")[0][0])


# -- catching up -------------------------------------------------------------------------------


def test_a_first_copy_then_changes_clears_and_upgrades_reach_the_mirror(tmp_path: Path, pg_url: str) -> None:
    async def scenario(h: Hosts) -> None:
        await h.a.merge_suppression(suppression("gone@example.org"))
        await h.a.merge_suppression(suppression("cls@example.org", klass="bulk", cause=Cause.COMPLAINT))
        await h.a.merge_suppression(suppression("soft@example.org", level=Level.SOFT,
                                                expires_at=utcnow() + timedelta(hours=1)))  # fmt: skip
        await h.mirror.prepare()  # a first start: a full copy
        assert h.mirror.resyncs == 1
        assert local_rows(h.b_dir) == shared_rows(h.url)
        assert await h.refused_at_b("gone@example.org") == ["*"]
        assert await h.refused_at_b("cls@example.org") == ["bulk"]

        await h.a.merge_suppression(suppression("new@example.org"))
        await h.a.merge_suppression(suppression("soft@example.org", level=Level.HARD, reason="hard now"))
        verdict = await h.a.clear_suppressions(ClearRequest("gone@example.org", None, "cli:t", "fixed"), NOW)
        assert verdict.cleared
        h.a.note_refused([("cls@example.org", "bulk")], NOW)  # refusal counts are not changes
        await h.synced()
        assert h.mirror.resyncs == 1  # caught up from the change log, no second copy
        assert local_rows(h.b_dir) == shared_rows(h.url)
        assert await h.refused_at_b("gone@example.org") == []  # the clear reached B
        assert await h.refused_at_b("new@example.org") == ["*"]
        [soft] = (await h.b.suppressions_for(["soft@example.org"], utcnow(), mirror=True))["soft@example.org"]
        assert (soft.level, soft.reason) == (Level.HARD, "hard now")
        state = await h.b.read_mirror(mirror.read_state)
        assert (state.source, state.last_seq) == (h.state.where, max_seq(h.url))
        assert h.mirror.age() is not None and h.mirror.age() < 5  # type: ignore[operator]

    with_hosts(tmp_path, pg_url, scenario)


@pytest.mark.solo  # times a latency or a rate: runs alone (see Makefile)
def test_a_running_mirror_is_woken_by_notifications_and_polls_when_they_stop(
    tmp_path: Path, pg_url: str
) -> None:
    async def propagation(h: Hosts, address: str) -> float:
        started = time.monotonic()
        await h.a.merge_suppression(suppression(address))
        while await h.refused_at_b(address) != ["*"]:
            assert time.monotonic() - started < 5, f"{address} never reached the mirror"
            await asyncio.sleep(0.005)
        return time.monotonic() - started

    async def scenario(h: Hosts) -> None:
        await h.mirror.prepare()
        stop = asyncio.Event()
        task = asyncio.create_task(h.mirror.run(stop))
        try:
            seconds = []
            for i in range(6):
                await asyncio.sleep(0.1 + 0.13 * i)  # at different points of the 1 s poll
                seconds.append(await propagation(h, f"n{i}@example.org"))
            assert max(seconds) < 1.0
            assert sorted(seconds)[3] < 0.3  # woken, not polled: a poll alone takes 0.5 s on average
            # The notification connection dies: the poll still finds changes, and it comes back.
            killed = sql(h.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE query LIKE 'LISTEN%' AND datname = current_database()")  # fmt: skip
            assert killed == [(True,)]
            assert await propagation(h, "after@example.org") < 1.5
            await asyncio.sleep(0.5)
            assert await propagation(h, "again@example.org") < 1.0
            listening = sql(h.url, "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE query LIKE 'LISTEN%' AND datname = current_database()")  # fmt: skip
            assert listening == [(1,)]
        finally:
            stop.set()
            await task

    with_hosts(tmp_path, pg_url, scenario)


def test_changes_missed_while_the_mirror_was_away_are_caught_up_in_batches(tmp_path: Path, pg_url) -> None:
    async def scenario(h: Hosts) -> None:
        await h.mirror.prepare()
        # B hears nothing of these (no round runs): as if every notification were missed.
        entries = [suppression(f"u{i}@example.org") for i in range(23)]
        await h.a.merge_suppressions(entries, actor="t", action="import", source=Source.IMPORT)
        for i in range(0, 23, 3):
            await h.a.clear_suppressions(ClearRequest(f"u{i}@example.org", None, "cli:t", "ok"), NOW)
        await h.a.set_class_paused("bulk", True, reason="complaints", actor="t", now=NOW)
        h.mirror.batch = 10
        rounds = []
        while True:
            rounds.append(await h.mirror.sync())
            if not rounds[-1]:
                break
        assert rounds == [True, True, True, False]  # 31 changes, 10 a round
        assert local_rows(h.b_dir) == shared_rows(h.url)
        assert len(local_rows(h.b_dir)) == 23 - 8
        assert local_classes(h.b_dir) == [("bulk", 1, "complaints")]
        assert h.mirror.resyncs == 1

    with_hosts(tmp_path, pg_url, scenario)


def test_class_pauses_reach_the_mirror_and_tell_the_guard_view(tmp_path: Path, pg_url: str) -> None:
    async def scenario(h: Hosts) -> None:
        told: list[int] = []
        h.mirror.on_classes = lambda: told.append(1)
        await h.mirror.prepare()
        assert told == [] and await h.b.class_states(mirror=True) == {}
        await h.a.set_class_paused("bulk", True, reason="complaints", actor="guard", now=NOW)
        await h.synced()
        states = await h.b.class_states(mirror=True)
        assert states["bulk"].paused and states["bulk"].changed_by == "guard"
        assert states == await h.a.class_states()  # the same record, from the copy
        assert told == [1]
        await h.synced()
        assert told == [1]  # nothing changed, nobody told
        await h.a.set_class_paused("bulk", False, reason="fixed", actor="cli:t", now=NOW)
        await h.synced()
        assert not (await h.b.class_states(mirror=True))["bulk"].paused
        assert told == [1, 1]

    with_hosts(tmp_path, pg_url, scenario)


# -- a full copy ---------------------------------------------------------------------------------


def test_a_copy_over_a_stale_table_leaves_exactly_the_shared_rows(tmp_path: Path, pg_url: str) -> None:
    async def scenario(h: Hosts) -> None:
        entries = [suppression(a) for a in ODD] + [suppression(a, klass="bulk") for a in ODD[::2]]
        await h.a.merge_suppressions(entries, actor="t", action="import", source=Source.IMPORT)
        # B's table holds an interrupted copy: rows the shared state no longer has (between
        # its keys, before them and after them), rows that differ, rows that are right.
        stale = [suppression(a) for a in ("!first@example.org", "alice@example.orf", "zz@example.org")]
        stale += [suppression(ODD[0], reason="old reason"), suppression(ODD[1], klass="list")]
        await h.b.write_mirror(lambda db: [mirror.apply_changes(
            db, mirror.Changes(0, [_row(e) for e in stale], [], [], more=False),
            MirrorState(h.state.where, None, None), classes_changed=False,
        )])  # fmt: skip
        h.mirror.chunk = 4
        await h.mirror.prepare()
        assert h.mirror.resyncs == 1
        assert local_rows(h.b_dir) == shared_rows(h.url)
        assert await h.refused_at_b("zz@example.org") == []
        assert await h.refused_at_b(ODD[0]) == ["*", "bulk"]

    with_hosts(tmp_path, pg_url, scenario)


def _row(entry: Any) -> tuple[Any, ...]:
    from relay.store.writes import _SUPPRESSIONS

    return tuple(_SUPPRESSIONS.values(entry))


def test_a_copy_chunk_rewrites_only_what_differs(tmp_path: Path) -> None:
    from relay.store.sqlite import SqliteDb
    from relay.store.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.executescript(MIGRATIONS[0])
    db = SqliteDb(conn)
    rows = [_row(suppression(a)) for a in sorted(ODD, key=str.encode)]
    assert mirror.merge_chunk(db, rows[:5], None, last=False) == 5
    assert mirror.merge_chunk(db, rows[5:], mirror.key(rows[4]), last=True) == len(ODD) - 5
    assert mirror.merge_chunk(db, rows[:5], None, last=False) == 0  # the same rows again: no write
    changed = [_row(suppression(rows[1][0], reason="new"))]
    # A chunk covering the keys up to rows[3] with rows[1] changed and rows[3]: 1 written, 2 gone.
    assert mirror.merge_chunk(db, [*changed, rows[3]], None, last=False) == 1 + 2
    assert mirror.merge_chunk(db, [], mirror.key(rows[3]), last=True) == len(ODD) - 4
    left = db.fetchall(f"SELECT {', '.join(COLUMNS)} FROM suppressions ORDER BY address, class")
    assert [tuple(r) for r in left] == [changed[0], rows[3]]
    conn.close()


def test_a_pruned_change_log_or_a_restored_database_makes_the_mirror_copy_again(
    tmp_path: Path, pg_url: str
) -> None:
    async def scenario(h: Hosts) -> None:
        await h.a.merge_suppression(suppression("one@example.org"))
        await h.mirror.prepare()
        # While B is away, more changes; then the log is pruned past them (retention over).
        for i in range(5):
            await h.a.merge_suppression(suppression(f"later{i}@example.org"))
        sql(h.url, "UPDATE suppression_changes SET at = now() - interval '2 days'")
        with psycopg.connect(h.url, autocommit=True) as conn:
            assert mirror.prune_changes(conn, timedelta(days=1), batch=2) == max_seq(h.url) - 1
        assert sql(h.url, "SELECT count(*) FROM suppression_changes") == [(1,)]  # the newest is kept
        await h.synced()
        assert h.mirror.resyncs == 2
        assert local_rows(h.b_dir) == shared_rows(h.url)

        # A database restored from before: its log ends before the copy's last change.
        sql(h.url, "TRUNCATE suppression_changes RESTART IDENTITY")
        sql(h.url, "DELETE FROM suppressions WHERE address LIKE 'later%'")  # logged as seq 1.. again
        await h.synced()
        assert h.mirror.resyncs == 3
        assert local_rows(h.b_dir) == shared_rows(h.url)
        assert await h.refused_at_b("later0@example.org") == []

    with_hosts(tmp_path, pg_url, scenario)


def test_pruning_keeps_recent_changes_and_the_newest(pg_url: str) -> None:
    sql(pg_url, "INSERT INTO suppression_changes (address, class, at) VALUES "
                "('a', '*', now() - interval '3 days'), ('b', '*', now() - interval '2 days'), "
                "('c', '*', now() - interval '1 hour'), ('d', '*', now() - interval '3 days')")  # fmt: skip
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert mirror.prune_changes(conn, timedelta(days=1)) == 2
        assert mirror.prune_changes(conn, timedelta(days=1)) == 0
    assert [r[0] for r in sql(pg_url, "SELECT address FROM suppression_changes ORDER BY seq")] == ["c", "d"]


@pytest.mark.parametrize(
    ("last", "oldest", "newest", "copy"),
    [
        (None, None, None, True), (None, 1, 5, True), (0, None, None, False), (3, None, None, True),
        (5, 1, 5, False), (4, 1, 5, False), (6, 1, 5, True), (0, 1, 5, False), (0, 2, 5, True),
        (4, 5, 9, False), (3, 5, 9, True),
    ],
)  # fmt: skip
def test_when_the_change_log_can_bring_a_copy_up_to_date(
    last: int | None, oldest: int | None, newest: int | None, copy: bool
) -> None:
    assert (mirror.resync_reason(last, oldest, newest) is not None) is copy


# -- PostgreSQL away -------------------------------------------------------------------------------


def test_without_postgresql_the_mirror_answers_logs_once_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PostgresServer.started()  # not under pytest's tmp dir: see tests/support/postgres.py
    try:
        url = server.database()

        async def scenario(h: Hosts) -> None:
            await h.a.merge_suppression(suppression("gone@example.org"))
            await h.mirror.prepare()
            synced = h.mirror.age()
            server.stop()  # fast
            with caplog.at_level(logging.WARNING, logger="ses_relay.mirror"):
                rests = [await h.mirror.tick() for _ in range(3)]
                assert all(rest >= 0.8 for rest in rests) and rests[-1] > rests[0]  # backing off
                assert await h.refused_at_b("gone@example.org") == ["*"]  # still answered, locally
                assert h.mirror.age() >= synced  # type: ignore[operator]
                behind = [r for r in caplog.records if "cannot read the shared state" in r.message]
                assert len(behind) == 1 and "127.0.0.1" in behind[0].message
                # A restart of serve meanwhile: it starts from the copy.
                again = StateMirror(h.b, h.state)
                await again.prepare()
                assert again.age() is not None
                await again.close()
                server.start()
                await h.a.merge_suppression(suppression("new@example.org"))
                deadline = time.monotonic() + 20
                while await h.refused_at_b("new@example.org") != ["*"]:
                    assert time.monotonic() < deadline, "the mirror did not catch up"
                    await h.mirror.tick()
                    await asyncio.sleep(0.2)
                caught = [r for r in caplog.records if "caught up with the shared state" in r.message]
                assert len(caught) == 1
                assert len([r for r in caplog.records if "cannot read the shared state" in r.message]) == 2
            assert local_rows(h.b_dir) == shared_rows(url)

        with_hosts(tmp_path, url, scenario)

        async def fresh_host_while_down() -> None:
            server.stop()
            state = StateConfig(url=url, connect_timeout="2s")
            store = await Store.open(tmp_path / "c" / "relay.db", state=state, state_required=False)
            try:
                with pytest.raises(StoreError, match="no copy of its suppressions yet"):
                    await StateMirror(store, StateConfig(url=url)).prepare()
            finally:
                await store.close()

        asyncio.run(fresh_host_while_down())
    finally:
        server.cleanup()


# -- a store that is not a copy ------------------------------------------------------------------------


def test_a_one_host_store_is_not_overwritten_until_the_shared_state_has_its_entries(
    tmp_path: Path, pg_url: str
) -> None:
    async def scenario() -> None:
        one_host = await Store.open(tmp_path / "b" / "relay.db")  # SQLite only, as before [state] url
        await one_host.merge_suppression(suppression("kept@example.org"))
        await one_host.merge_suppression(suppression("old@example.org", expires_at=NOW))  # expired
        await one_host.close()
        h = Hosts(tmp_path, pg_url)
        await h.open()
        try:
            with pytest.raises(NotAMirror, match=r"1 suppression\(s\).*kept@example.org.*state migrate"):
                await h.mirror.prepare()
            assert len(local_rows(h.b_dir)) == 2  # untouched
            await h.a.merge_suppression(suppression("kept@example.org"))  # as `state migrate` would copy it
            h.mirror = StateMirror(h.b, h.state)
            await h.mirror.prepare()
            assert local_rows(h.b_dir) == shared_rows(pg_url)
        finally:
            await h.close()

    asyncio.run(scenario())


# -- what `state check` reads ----------------------------------------------------------------------------


def test_the_probe_counts_the_changes_a_mirror_is_behind(tmp_path: Path, pg_url: str) -> None:
    async def scenario(h: Hosts) -> None:
        path = h.b_dir / "relay.db"
        assert mirror.probe(tmp_path / "nowhere.db", h.state, reachable=True) is None
        assert "not synced" in mirror.probe(path, h.state, reachable=True).problems[0]  # type: ignore[union-attr]
        await h.mirror.prepare()
        found = mirror.probe(path, h.state, reachable=True)
        assert found is not None and (found.behind, found.lag_seconds, found.problems) == (0, 0.0, [])
        for i in range(3):
            await h.a.merge_suppression(suppression(f"p{i}@example.org"))
        await asyncio.sleep(0.2)
        found = mirror.probe(path, h.state, reachable=True)
        assert found is not None and found.behind == 3 and 0.1 < found.lag_seconds < 30  # type: ignore[operator]
        await h.a.set_class_paused("bulk", True, reason="x", actor="t", now=NOW)
        assert "class pauses differ" in mirror.probe(path, h.state, reachable=True).note  # type: ignore[union-attr]
        await h.synced()
        found = mirror.probe(path, h.state, reachable=True)
        assert found is not None and (found.behind, found.note) == (0, "")
        away = mirror.probe(path, h.state, reachable=False)
        assert away is not None and away.behind is None and away.lag_seconds is not None

    with_hosts(tmp_path, pg_url, scenario)


def test_a_mirror_past_its_max_age_is_a_problem() -> None:
    fresh = MirrorProbe(300.0, synced_at=NOW, last_seq=4, behind=0, lag_seconds=2.0)
    assert fresh.problems == []
    stale = MirrorProbe(300.0, synced_at=NOW, last_seq=4, behind=None, lag_seconds=301.0)
    assert "301 s behind" in stale.problems[0] and "mirror_max_age 300 s" in stale.problems[0]
    assert "not synced" in MirrorProbe(300.0).problems[0]
