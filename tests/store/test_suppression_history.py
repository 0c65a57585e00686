"""The history of suppression entries as the store keeps it: one row for every change, in
the transaction of the change, through the one write path (merge and clear); clears
weighed by the clear rules in the clearing transaction; "bounced again after a clear"
applied by the feedback transaction (each against SQLite and PostgreSQL); and the rows a
SQLite store older than the history gets."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from relay.clearing import ClearRequest
from relay.store import Store, StoreError
from relay.store.sqlite_schema import MIGRATIONS
from relay.suppression import ALL, Cause, Level, Suppression
from relay.suppression_history import Change, Source
from relay.timeutil import to_text
from tests.store.test_feedback_apply import T0, mail_of, seed
from tests.store.test_migrations import old_store
from tests.support.sns_sqs import bounce, complaint
from tests.support.stores import Place, apply, db_rows, in_store, shipped

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def entry(address: str, at: datetime = T0, **kw: object) -> Suppression:
    values: dict[str, object] = {
        "address": address, "klass": ALL, "level": Level.HARD, "cause": Cause.MANUAL, "reason": "by hand",
        "created_at": at, "updated_at": at, "expires_at": None,
    }  # fmt: skip
    values.update(kw)
    return Suppression(**values)  # type: ignore[arg-type]

async def bounced(store: Store, addr: str, kind: str, at: datetime, *, now: datetime | None = None) -> None:
    """Mail to `addr` sent an hour before `at` bounces (`kind`: Permanent or Transient) at `at`,
    applied at `now` (default: as it happens)."""
    sid, ses_id = await seed(store, [addr], at=at - HOUR)
    await apply(store, bounce(mail_of(ses_id, [addr], sid), [addr], kind, "General", at=at), now=now or at)



def test_every_change_a_merge_makes_is_recorded_with_what_made_it(place: Place) -> None:
    addr = "story@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        soft = bounce(mail_of(ses_id, [addr], sid), [addr], "Transient", "General", at=T0, fid="fb-1")
        await apply(store, soft, now=T0)
        again = bounce(mail_of(ses_id, [addr], sid), [addr], "Transient", "MailboxFull", at=T0 + HOUR / 2,
                       fid="fb-2")  # fmt: skip
        await apply(store, again, now=T0 + HOUR / 2)
        hard = bounce(mail_of(ses_id, [addr], sid), [addr], "Permanent", "General", at=T0 + HOUR, fid="fb-3")
        await apply(store, hard, now=T0 + HOUR)
        await apply(store, hard, now=T0 + 2 * HOUR)  # a redelivery: no change, no row
        manual = entry(addr, T0 + 3 * HOUR, level=Level.SOFT, expires_at=T0 + DAY)
        await store.merge_suppression(manual, actor="cli:alice", detail="customer asked")  # changes nothing
        forever = entry(addr, T0 + 4 * HOUR, reason="keep it")
        await store.merge_suppression(forever, actor="cli:alice", detail="customer asked")

        rows = await store.suppression_history(addr)
        events = {e.record.feedback_id: e.id for e in await store.events(address=addr)}
        assert [(r.change, r.source, r.actor, r.level, r.event_id, r.feedback_id) for r in rows] == [
            (Change.CREATED, Source.EVENT, "feedback", Level.SOFT, events["fb-1"], "fb-1"),
            (Change.EXTENDED, Source.EVENT, "feedback", Level.SOFT, events["fb-2"], "fb-2"),
            (Change.RAISED, Source.EVENT, "feedback", Level.HARD, events["fb-3"], "fb-3"),
            (Change.EXTENDED, Source.ADMIN, "cli:alice", Level.HARD, None, None),
        ]
        assert all(r.ses_message_id == ses_id for r in rows[:3])
        assert [r.at for r in rows] == [T0, T0 + HOUR / 2, T0 + HOUR, T0 + 4 * HOUR]
        assert rows[1].expires_at == T0 + HOUR / 2 + HOUR and rows[1].reason.startswith(
            "Transient/MailboxFull"
        )
        assert rows[2].expires_at == T0 + HOUR + 30 * DAY
        assert rows[3].expires_at is None and rows[3].note == "customer asked"
        assert rows[3].reason == "keep it" and rows[3].cause is Cause.MANUAL

    in_store(place, scenario)


def test_an_expired_entry_merged_again_is_renewed_and_a_new_cause_restates_it(place: Place) -> None:
    addr = "again@example.org"

    async def scenario(store: Store) -> None:
        await store.merge_suppression(entry(addr, level=Level.SOFT, expires_at=T0 + HOUR))
        await store.merge_suppression(entry(addr, T0 + 2 * HOUR, level=Level.SOFT, expires_at=T0 + 3 * HOUR))
        await store.merge_suppression(
            entry(addr, T0 + 2 * HOUR, level=Level.SOFT, expires_at=T0 + 3 * HOUR, reason="other words")
        )
        rows = await store.suppression_history(addr)
        assert [(r.change, r.source, r.actor) for r in rows] == [
            (Change.CREATED, Source.ADMIN, "ses-relay"),
            (Change.RENEWED, Source.ADMIN, "ses-relay"),
            (Change.RESTATED, Source.ADMIN, "ses-relay"),
        ]

    in_store(place, scenario)


def test_imports_and_ses_list_pulls_are_recorded_as_such_and_a_covered_row_is_not(place: Place) -> None:
    async def scenario(store: Store) -> None:
        imported = [entry("a@example.org", cause=Cause.BOUNCE), entry("b@example.org", cause=Cause.BOUNCE)]
        await store.merge_suppressions(
            imported,
            actor="cli:bob",
            action="import",
            source=Source.IMPORT,
            detail="from x.csv, SendGrid bounces",
        )
        pulled = [
            entry("b@example.org", cause=Cause.BOUNCE, reason="on SES's account-level suppression list")
        ]
        await store.merge_suppressions(
            pulled,
            actor="cli:bob",
            action="sync-ses-pull",
            source=Source.SES_LIST,
            detail="SES account-level list",
        )
        await store.merge_suppressions(
            pulled,
            actor="cli:bob",
            action="sync-ses-pull",
            source=Source.SES_LIST,
            detail="SES account-level list",
        )
        [a] = await store.suppression_history("a@example.org")
        assert (a.change, a.source, a.actor, a.note) == (
            Change.CREATED, Source.IMPORT, "cli:bob", "from x.csv, SendGrid bounces"
        )  # fmt: skip
        b = await store.suppression_history("b@example.org")
        assert [(r.change, r.source) for r in b] == [
            (Change.CREATED, Source.IMPORT),
            (Change.RESTATED, Source.SES_LIST),
        ]

    in_store(place, scenario)


def test_a_failed_write_leaves_neither_the_change_nor_its_history(place: Place) -> None:
    async def scenario(store: Store) -> None:
        bad = replace(entry("bad@example.org"), reason=None)  # type: ignore[arg-type]  # NOT NULL
        with pytest.raises(StoreError):
            await store.merge_suppressions(
                [entry("good@example.org"), bad], actor="cli:bob", action="import", source=Source.IMPORT
            )
        assert await store.suppressions_of("good@example.org") == []
        assert await store.suppression_history("good@example.org") == []

    in_store(place, scenario)


# -------------------------------------------------------------------------- clears


def test_a_refused_clear_changes_nothing_and_a_forced_one_keeps_what_was_cleared(place: Place) -> None:
    addr = "angry@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr], klass="list")
        await apply(store, complaint(mail_of(ses_id, [addr], sid, "list"), [addr], at=T0), now=T0)
        store.note_refused([(addr, "list")] * 3, T0 + HOUR)
        await store.merge_suppression(entry("other@example.org"))  # a write after: the counts are in
        await shipped(store)  # with a shared state: once shipped from the outbox
        refused = await store.clear_suppressions(ClearRequest(addr, None, "cli:alice", "asked"), T0 + DAY)
        assert refused.cleared == [] and refused.problems and refused.entries[0].guarded
        assert [e.cause for e in await store.suppressions_of(addr)] == [Cause.COMPLAINT]
        assert [r.change for r in await store.suppression_history(addr)] == [Change.CREATED]
        assert await store.audit_log(addr) == []

        forced = ClearRequest(addr, None, "cli:alice", "they wrote to us", force=True, max_per_day=100)
        verdict = await store.clear_suppressions(forced, T0 + DAY)
        assert [e.klass for e in verdict.cleared] == ["list"] and verdict.left_today == 99
        assert await store.suppressions_of(addr) == []
        _, cleared = await store.suppression_history(addr)
        assert (cleared.change, cleared.source, cleared.actor, cleared.at) == (
            Change.CLEARED, Source.ADMIN, "cli:alice", T0 + DAY
        )  # fmt: skip
        assert cleared.note == "they wrote to us (--force)"
        assert (cleared.level, cleared.cause, cleared.reason) == (Level.PERMANENT, Cause.COMPLAINT, "abuse")
        assert (cleared.refused_count, cleared.last_refused_at) == (3, T0 + HOUR)
        assert cleared.window_seconds is None and cleared.ses_message_id == ses_id
        [audited] = await store.audit_log(addr)
        assert audited.action == "clear" and audited.detail.startswith(
            "they wrote to us (--force) (was permanent"
        )

    in_store(place, scenario)


def test_a_cleared_entry_keeps_the_window_it_was_set_for(place: Place) -> None:
    addr = "moved@example.org"

    async def scenario(store: Store) -> None:
        now = T0 + timedelta(minutes=1)
        await bounced(store, addr, "Permanent", now)
        # a later, shorter entry only restates it: the 30 days still run from the bounce
        await store.merge_suppression(entry(addr, now + DAY, cause=Cause.BOUNCE, expires_at=now + 2 * DAY))
        await store.clear_suppressions(ClearRequest(addr, None, "cli:alice"), now + 2 * DAY)
        cleared = (await store.suppression_history(addr))[-1]
        assert cleared.change is Change.CLEARED and cleared.window_seconds == 30 * 86400

    in_store(place, scenario)


def test_the_daily_limit_counts_every_admins_clears_of_the_last_24_hours(place: Place) -> None:
    async def scenario(store: Store) -> None:
        for i in range(4):
            await store.merge_suppression(entry(f"u{i}@example.org"))
        limit = 2
        first = await store.clear_suppressions(
            ClearRequest("u0@example.org", None, "cli:a", max_per_day=limit), T0
        )
        second = await store.clear_suppressions(
            ClearRequest("u1@example.org", None, "cli:b", max_per_day=limit), T0 + HOUR
        )
        assert (first.left_today, second.left_today) == (1, 0)
        third = await store.clear_suppressions(
            ClearRequest("u2@example.org", None, "cli:c", max_per_day=limit), T0 + 2 * HOUR
        )
        assert third.cleared == [] and "max_clears_per_day = 2" in third.problems[0]
        later = await store.clear_suppressions(
            ClearRequest("u2@example.org", None, "cli:c", max_per_day=limit), T0 + DAY + HOUR / 2
        )  # the first clear is more than 24 hours old: one is free again
        assert [e.address for e in later.cleared] == ["u2@example.org"] and later.left_today == 0
        forced = await store.clear_suppressions(
            ClearRequest("u3@example.org", None, "cli:c", force=True, max_per_day=limit), T0 + DAY + HOUR
        )
        assert forced.cleared and forced.left_today == 0

    in_store(place, scenario)


def test_two_admins_at_once_cannot_both_take_the_last_clear(place: Place) -> None:
    async def scenario(store: Store) -> None:
        await store.merge_suppression(entry("x@example.org"))
        await store.merge_suppression(entry("y@example.org"))
        requests = [
            ClearRequest(a, None, f"cli:{a[0]}", max_per_day=1) for a in ("x@example.org", "y@example.org")
        ]
        verdicts = await asyncio.gather(*(store.clear_suppressions(r, T0) for r in requests))
        assert sorted(bool(v.cleared) for v in verdicts) == [False, True]
        left = [a for a in ("x@example.org", "y@example.org") if await store.suppressions_of(a)]
        assert len(left) == 1

    in_store(place, scenario)


# -------------------------------------------------------------------------- bounced again after a clear


def test_a_bounce_after_a_clear_is_suppressed_for_twice_the_cleared_window(place: Place) -> None:
    addr = "back@example.org"

    async def scenario(store: Store) -> None:
        first = T0 + timedelta(minutes=1)
        await bounced(store, addr, "Permanent", first)
        await store.clear_suppressions(ClearRequest(addr, None, "cli:alice", "fixed"), first + DAY)
        late = first + DAY - HOUR  # bounced before the clear, arrives after it: not "again"
        await bounced(store, addr, "Transient", late, now=first + DAY + timedelta(minutes=5))
        [ordinary] = await store.suppressions_of(addr)
        assert ordinary.level is Level.SOFT and "after a clear" not in ordinary.reason
        again = first + 3 * DAY
        await bounced(store, addr, "Transient", again)
        [doubled] = await store.suppressions_of(addr)
        assert (doubled.level, doubled.expires_at) == (Level.HARD, again + 60 * DAY)
        assert doubled.reason.startswith("bounced again 2d after a clear: twice the cleared entry's 30d; ")
        last = (await store.suppression_history(addr))[-1]
        assert (last.change, last.source, last.reason) == (Change.RENEWED, Source.EVENT, doubled.reason)

    in_store(place, scenario)


# -------------------------------------------------------------------------- a store older than the history


def test_entries_of_an_older_store_get_one_on_file_row_each_sourced_from_the_audit_log(
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.db"
    old_store(db, 5)
    stamp = to_text(T0)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for address, cause, level in [
            ("pulled@example.org", "bounce", 2), ("added@example.org", "manual", 2),
            ("json@example.org", "bounce", 2), ("csv@example.org", "bounce", 2),
            ("event@example.org", "bounce", 1), ("recleared@example.org", "bounce", 2),
        ]:  # fmt: skip
            conn.execute(
                "INSERT INTO suppressions (address, class, level, cause, reason, created_at, updated_at) "
                "VALUES (?, '*', ?, ?, 'r', ?, ?)",
                (address, level, cause, stamp, stamp),
            )
        for address, action, detail in [
            ("pulled@example.org", "sync-ses-pull", "on SES's list (BOUNCE) (SES account-level list)"),
            ("added@example.org", "add", "by hand"),
            ("json@example.org", "import", "imported from SES (from list.json, SES account-level list)"),
            ("csv@example.org", "import", "imported (from backup.csv, ses-relay CSV)"),
            ("recleared@example.org", "sync-ses-pull", "on SES's list (BOUNCE) (SES account-level list)"),
            ("recleared@example.org", "clear", "cleared by admin (was hard bounce: r)"),
        ]:
            conn.execute(
                "INSERT INTO audit (at, actor, action, address, class, detail) "
                "VALUES (?, 'cli:old', ?, ?, '*', ?)",
                (stamp, action, address, detail),
            )
    finally:
        conn.close()

    async def scenario(store: Store) -> None:
        assert await store.schema_version() == len(MIGRATIONS)
        sources = {}
        for address in ("pulled", "added", "json", "csv", "event", "recleared"):
            [row] = await store.suppression_history(f"{address}@example.org")
            assert (
                row.change is Change.ON_FILE and row.at == T0 and row.note == "on file when the history began"
            )
            sources[address] = (row.source, row.actor)
        assert sources == {
            "pulled": (Source.SES_LIST, "cli:old"), "added": (Source.ADMIN, "cli:old"),
            "json": (Source.SES_LIST, "cli:old"), "csv": (Source.IMPORT, "cli:old"),
            "event": (Source.EVENT, "feedback"), "recleared": (Source.EVENT, "feedback"),
        }  # fmt: skip
        refused = await store.clear_suppressions(
            ClearRequest("pulled@example.org", None, "cli:new"), T0 + DAY
        )
        assert refused.problems and "SES's account-level list" in (refused.entries[0].guarded or "")
        cleared = await store.clear_suppressions(ClearRequest("csv@example.org", None, "cli:new"), T0 + DAY)
        assert cleared.cleared

    in_store(tmp_path, scenario)
    assert db_rows(tmp_path, "SELECT count(*) FROM suppression_history WHERE change = 'on-file'") == [(6,)]
