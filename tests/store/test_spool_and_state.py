"""What the spool keeps and what the state keeps, whichever backend holds the state.

With one host both are the data dir's file; with a shared state the spool (message
bytes, and the sender's copy of each submission) stays local while the record goes to
PostgreSQL. Either way an accept, a pause, an outcome and a refusal count must look
the same to the callers.
"""

from __future__ import annotations

import sqlite3
import time

from relay.store import NoticeRecord, Store
from relay.timeutil import to_text
from tests.support.entries import NOW, suppression
from tests.support.stores import Place, in_store, new_submission, shipped, sync_mirror

NOTICE = NoticeRecord(
    dedupe_key="k:a@example.org:suppressed_at_data", reason="suppressed_at_data",
    recipient="gone@example.org", sender="app@example.com",
)  # fmt: skip


def local(place: Place, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(place.data_dir / "relay.db")
    try:
        return list(db.execute(sql))
    finally:
        db.close()


def test_an_accepted_message_is_spooled_here_and_recorded_in_the_state(place: Place) -> None:
    sub = new_submission(("a@example.org", "b@example.org"), at=NOW)

    async def scenario(store: Store) -> None:
        await store.accept(sub, b"Subject: hi\r\n\r\nhello\r\n", time.time(), [NOTICE])
        [item] = await store.due(time.time() + 1, 10)
        assert (item.submission.id, item.data, item.pending) == (
            sub.id, b"Subject: hi\r\n\r\nhello\r\n", ("a@example.org", "b@example.org")
        )  # fmt: skip
        await shipped(store)
        recorded = await store.submission(sub.id)
        assert recorded is not None and recorded.subject == "hi" and len(recorded.recipients) == 2
        assert [n.record.dedupe_key for n in await store.notices()] == [NOTICE.dedupe_key]

    in_store(place, scenario)
    assert local(place, "SELECT submission_id FROM spool") == [(sub.id,)]
    assert place.rows("SELECT id FROM submissions")[0]["id"] == sub.id
    if place.state_url is not None:  # the record is PostgreSQL's; the local copy has no notices
        assert local(place, "SELECT count(*) FROM notices") == [(0,)]


def test_a_paused_class_holds_its_spooled_mail_until_it_is_resumed(place: Place) -> None:
    held = new_submission(("a@example.org",), at=NOW)
    other = new_submission(("b@example.org",), at=NOW)

    async def scenario(store: Store) -> None:
        await store.accept(held, b"x", 1.0)
        await store.accept(other, b"y", 2.0)
        await store.set_class_paused("transactional", True, reason="complaints", actor="t", now=NOW)
        await sync_mirror(store, place)  # a shared state's pause reaches the spool through the mirror
        assert await store.due(10.0, 10) == []
        await store.set_class_paused("transactional", False, reason="ok", actor="t", now=NOW)
        await sync_mirror(store, place)
        assert [i.submission.id for i in await store.due(10.0, 10)] == [held.id, other.id]

    in_store(place, scenario)


def test_an_outcome_settles_the_record_and_the_spool_and_refusals_are_counted(place: Place) -> None:
    sub = new_submission(("a@example.org", "b@example.org"), at=NOW)

    async def scenario(store: Store) -> None:
        await store.merge_suppression(suppression("gone@example.org"))
        await store.accept(sub, b"x", 1.0)
        await store.record_outcome(sub.id, ["a@example.org"], "sent", now=NOW, ses_message_id="m-1")
        [item] = await store.due(10.0, 10)
        assert item.pending == ("b@example.org",)  # the sender's copy knows `a` is done
        await store.record_outcome(sub.id, ["b@example.org"], "failed", now=NOW, detail="refused")
        assert await store.due(10.0, 10) == []
        await shipped(store)
        recorded = await store.submission(sub.id)
        assert recorded is not None
        settled = [(r.status, r.ses_message_id) for r in recorded.recipients]
        assert settled == [("sent", "m-1"), ("failed", None)]
        assert await store.last_sent_at() == NOW
        store.note_refused([("gone@example.org", "*")] * 2, NOW)
        await shipped(store)

    in_store(place, scenario)
    assert local(place, "SELECT count(*) FROM spool") == [(0,)]
    [entry] = place.rows("SELECT refused_count, last_refused_at FROM suppressions")
    assert (entry["refused_count"], entry["last_refused_at"]) == (2, to_text(NOW))
