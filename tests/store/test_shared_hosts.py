"""Relays sharing one state take turns (real PostgreSQL): notices delivered once whichever host
owes them, and heartbeats that tell each relay how many others are sending.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feedback.notices.notifier import Notifier
from relay.config import Config
from relay.sending.rate_share import Heartbeat
from relay.sending.sender import Sender
from relay.store import NoticeRecord, Store
from relay.store.shared import HOST_LIVE, NOTICE_LEASE
from relay.timeutil import utcnow
from tests.store.test_postgres import host, run, sql
from tests.support.entries import NOW
from tests.support.postgres import PostgresServer
from tests.support.stores import new_submission


def _notice(i: int) -> NoticeRecord:
    return NoticeRecord(
        dedupe_key=f"s{i}:r{i}@example.org:permanent_bounce", reason="permanent_bounce",
        recipient=f"r{i}@example.org", sender=f"app{i}@example.com", status="5.1.1",
        diagnostic="smtp; 550 5.1.1 user unknown", bounce_type="Permanent", bounce_subtype="General",
    )  # fmt: skip


async def _add_notices(store: Store, count: int) -> None:
    await store.apply_feedback(lambda tx: [tx.add_notice(_notice(i)) for i in range(count)], NOW)


# -- notice leases: the holder settles, nobody else ------------------------------------------


def test_a_host_whose_lease_was_taken_over_cannot_overwrite_the_new_holders_outcome(
    tmp_path: Path, pg_url: str
) -> None:
    async def scenario() -> None:
        a, b = await host(tmp_path, pg_url, "a"), await host(tmp_path, pg_url, "b")
        try:
            await _add_notices(a, 2)
            first, second = await a.due_notices(NOW)
            # `a` stalls past its lease; `b` takes the first notice over, delivers and settles it.
            late = NOW + NOTICE_LEASE + timedelta(seconds=1)
            [taken] = await b.due_notices(late, limit=1)
            assert taken.id == first.id
            assert await b.settle_notice(taken.id, "sent", now=late) is True
            # `a` comes back with a temporary failure: too late, b's "sent" stands.
            assert (
                await a.settle_notice(first.id, "pending", now=late, error="timed out", next_attempt_at=late)
                is False
            )
            assert await a.settle_notice(first.id, "failed", now=late, error="refused") is False
            # The second ran out too, but nobody took it over: what `a` did is what happened.
            assert await a.settle_notice(second.id, "sent", now=late) is True
            rows = sql(pg_url, "SELECT id, state, attempts, last_error, lease_owner FROM notices ORDER BY id")
            assert [(r["state"], r["attempts"], r["last_error"], r["lease_owner"]) for r in rows] == [
                ("sent", 1, None, None), ("sent", 1, None, None)
            ]  # fmt: skip
            # A notice nobody leased (settled already, or never claimed) is no one's to settle.
            assert await b.settle_notice(second.id, "sent", now=late) is False
            assert await b.settle_notice(10_000, "sent", now=late) is False
        finally:
            await a.close()
            await b.close()

    run(scenario)


def test_two_notifiers_on_two_hosts_deliver_each_due_notice_exactly_once(tmp_path: Path, pg_url: str) -> None:
    """Two hosts' Notifier loops run at once over one state: every notice reaches its
    sender's Maildir once, both hosts deliver some, and every notice ends `sent`."""
    count = 240
    mail_root = tmp_path / "mail"
    config = Config.model_validate({"notices": {"default": f"maildir:{mail_root}/{{address}}"}})

    async def scenario() -> None:
        a, b = await host(tmp_path, pg_url, "a"), await host(tmp_path, pg_url, "b")
        try:
            await _add_notices(a, count)
            notifiers = [
                Notifier(s, config, tmp_path / name, hostname=f"{name}.relay.test")
                for s, name in ((a, "a"), (b, "b"))
            ]
            stop = asyncio.Event()
            loops = [asyncio.create_task(n.run(stop)) for n in notifiers]
            deadline = asyncio.get_running_loop().time() + 60
            while [n for n in await a.notices() if n.state == "pending"]:
                assert asyncio.get_running_loop().time() < deadline, "notices still pending after 60 s"
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*loops)
        finally:
            await a.close()
            await b.close()

    run(scenario)
    delivered: dict[str, list[Any]] = {}
    for i in range(count):
        box = mailbox.Maildir(mail_root / f"app{i}@example.com", create=False)
        delivered[f"app{i}@example.com"] = [m["Message-ID"] for m in box]
    twice = {address: ids for address, ids in delivered.items() if len(ids) != 1}
    assert twice == {}
    by_host = [mid.rsplit("@", 1)[1].rstrip(">") for [mid] in delivered.values()]
    assert by_host.count("a.relay.test") + by_host.count("b.relay.test") == count
    assert by_host.count("a.relay.test") > 0 and by_host.count("b.relay.test") > 0
    rows = sql(pg_url, "SELECT state, attempts, lease_owner FROM notices")
    assert len(rows) == count
    assert {(r["state"], r["attempts"], r["lease_owner"]) for r in rows} == {("sent", 1, None)}


# -- heartbeats --------------------------------------------------------------------------------


def test_heartbeats_count_the_other_hosts_that_are_sending_and_forget_silent_ones(
    tmp_path: Path, pg_url: str
) -> None:
    async def scenario() -> None:
        hosts = [await host(tmp_path, pg_url, f"h{i}") for i in range(3)]
        a, b, c = hosts
        start = utcnow()
        try:
            assert await a.heartbeat(sending=True, started_at=start) == 0  # alone
            assert await b.heartbeat(sending=True, started_at=start) == 1  # a sends
            assert await c.heartbeat(sending=False, started_at=start) == 2  # a and b send
            assert await a.heartbeat(sending=True, started_at=start) == 1  # b; c is idle
            assert await c.heartbeat(sending=True, started_at=start) == 2
            assert await a.heartbeat(sending=True, started_at=start) == 2
            assert await b.heartbeat(sending=False, started_at=start) == 2  # b stops: a and c send
            assert await a.heartbeat(sending=True, started_at=start) == 1
            # c goes silent (dies): once it has not beaten for HOST_LIVE, it holds no share.
            sql(pg_url, "UPDATE hosts SET last_seen = last_seen - %s WHERE host_id = %s",
                HOST_LIVE + timedelta(seconds=1), c.host_id)  # fmt: skip
            assert await a.heartbeat(sending=True, started_at=start) == 0
            rows = sql(pg_url, "SELECT host_id, data_dir, sending FROM hosts ORDER BY host_id")
            assert {r["host_id"] for r in rows} == {h.host_id for h in hosts} and len(rows) == 3
            assert {r["data_dir"] for r in rows} == {str((tmp_path / f"h{i}").resolve()) for i in range(3)}
        finally:
            for h in hosts:
                await h.close()

    run(scenario)


def test_one_host_alone_has_nobody_to_beat_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "relay.db")
        try:
            assert await store.heartbeat(sending=True, started_at=NOW) == 0
        finally:
            await store.close()

    run(scenario)


def _sender(store: Store, tmp_path: Path, rate: float) -> Sender:
    from relay.sandbox.feed import Feed
    from relay.sandbox.stand_in import SandboxSes

    config = Config.model_validate({"ses": {"max_send_rate": rate}})
    return Sender(store, SandboxSes(tmp_path / "sandbox", Feed(tmp_path / "sandbox" / "feed")), config)


def test_each_sender_takes_its_share_and_keeps_it_while_the_shared_state_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeat loops of two hosts set each sender's share of a 100/s account: 50 while both
    send, 100 once the other stops; with PostgreSQL gone a host keeps the share it had."""
    server = PostgresServer.started()  # not under pytest's tmp dir: see tests/support/postgres.py
    try:
        url = server.database()

        async def scenario() -> None:
            a, b = await host(tmp_path, url, "a", connect_timeout=2), await host(tmp_path, url, "b")
            try:
                sender_a, sender_b = _sender(a, tmp_path / "a", 100), _sender(b, tmp_path / "b", 100)
                for sender in (sender_a, sender_b):
                    await sender.configure_rate()
                beat_a, beat_b = Heartbeat(a, sender_a), Heartbeat(b, sender_b)
                await beat_a.beat(True)
                assert sender_a.limiter.rate == 100  # alone
                await beat_b.beat(True)
                assert sender_b.limiter.rate == 50
                await beat_a.beat(True)
                assert sender_a.limiter.rate == 50 and sender_a.limiter.burst == 2.5
                server.stop()
                await beat_a.beat(True)
                await beat_a.beat(True)
                assert sender_a.limiter.rate == 50  # kept while cut off
                assert caplog.text.count("cannot reach the shared state to share the send rate") == 1
                server.start()
                await b.heartbeat(sending=False, started_at=NOW)  # b has finished meanwhile
                deadline = time.monotonic() + 20
                while sender_a.limiter.rate != 100:
                    assert time.monotonic() < deadline, "the share did not come back"
                    await asyncio.sleep(0.2)
                    await beat_a.beat(True)
                assert "the shared state is back: sharing the send rate again" in caplog.text
                await beat_b.on_stop()  # a stopping worker's last word: not sending
                rows = sql(url, "SELECT sending FROM hosts WHERE host_id = %s", b.host_id)
                assert rows == [{"sending": False}]
            finally:
                await a.close()
                await b.close()

        with caplog.at_level(logging.INFO, logger="ses_relay.sender"):
            run(scenario)
    finally:
        server.cleanup()


def test_the_sender_says_it_was_busy_when_it_claimed_mail_since_last_asked(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "relay.db")
        try:
            sender = _sender(store, tmp_path, 100)
            await sender.configure_rate()
            assert sender.busy_since_asked() is False
            await store.accept(new_submission(("r@example.org",)), b"Subject: hi\r\n\r\nhi\r\n", 0.0)
            await sender.tick()  # claims the message and starts sending it
            assert sender.busy_since_asked() is True
            await sender.on_stop()  # the send ends
            assert sender.busy_since_asked() is False
            sender.share_rate(4)
            assert (sender.limiter.rate, sender.limiter.burst) == (25, 1.25)
            sender.share_rate(0)  # nobody counted: never more than the account's rate
            assert sender.limiter.rate == 100
        finally:
            await store.close()

    run(scenario)
