"""The suppression table is a function of the set of SES events, not of the order they come in.

Several consumers (several relays, SQS's own shuffling, a replay) apply events in some
order; what they must end with is what one consumer applying them in the order they
happened would end with. Here one store applies a realistic mix in that order, and
fresh stores apply the same events in other orders (shuffled, backwards, the later half
first); every suppression row must be the same, column for column.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feedback.apply import Incoming, apply_batch
from relay.config import Config
from relay.store import Store
from relay.suppression import Level
from relay.timeutil import utcnow
from tests.store.test_feedback_apply import T0, mail_of, seed
from tests.support.event_mix import event_mix
from tests.support.sns_sqs import bounce, iso, per_message
from tests.support.stores import Place, apply, in_store

CONFIG = Config()
BATCH = 10  # events an SQS receive hands over
EVENTS = event_mix(count=3_000, addresses=150, seed=7)


def suppression_table(place: Place) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in place.rows("SELECT * FROM suppressions ORDER BY address, class")]


def apply_all(place: Place, events: Sequence[dict[str, Any]]) -> None:
    async def go() -> None:
        store = await place.open()
        try:
            for start in range(0, len(events), BATCH):
                batch = [Incoming(json.dumps(e), "test") for e in events[start : start + BATCH]]
                await apply_batch(store, batch, CONFIG, utcnow())
        finally:
            await store.close()

    asyncio.run(go())


def reorder(how: str) -> list[dict[str, Any]]:
    events = list(EVENTS)
    if how == "shuffled":
        random.Random(42).shuffle(events)
    elif how == "backwards":
        events.reverse()
    elif how == "later half first":
        events = events[len(events) // 2 :] + events[: len(events) // 2]
    return events


@pytest.fixture(scope="module")
def in_order(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    place = Place(tmp_path_factory.mktemp("in-order"))
    apply_all(place, EVENTS)
    table = suppression_table(place)
    # The mix makes entries of every kind: escalations among them.
    reasons = [row[4] for row in table]
    assert sum("transient bounces within" in r for r in reasons) >= 10, reasons
    assert {row[2] for row in table} == {1, 2, 3}  # soft, hard and permanent entries
    return table


@pytest.mark.parametrize("how", ["shuffled", "backwards", "later half first"])
def test_events_in_any_order_end_in_the_same_suppression_table(
    in_order: list[tuple[Any, ...]], tmp_path: Path, how: str
) -> None:
    place = Place(tmp_path)
    apply_all(place, reorder(how))
    assert suppression_table(place) == in_order


def test_five_transient_bounces_newest_first_escalate_as_the_fifth_and_owe_its_notice(place: Place) -> None:
    """Applied in order, the fifth bounce escalates and its sender hears of it; applied
    newest first, the fifth came when it was alone, and the first (arriving last) brings
    it to the count: the same entry and the same one notice."""
    addr = "flaky@example.org"
    times = [T0 + timedelta(hours=h) for h in (0, 2, 4, 6, 8)]

    async def scenario(store: Store) -> None:
        docs = []
        for at in times:
            sid, ses_id = await seed(store, [addr], at=at - timedelta(minutes=5))
            docs.append(
                (sid, bounce(mail_of(ses_id, [addr], sid, sent_at=at), [addr], "Transient", "General", at=at))
            )
        for _, doc in reversed(docs):
            await apply(store, doc, now=T0 + timedelta(days=1))
        [entry] = await store.suppressions_of(addr)
        # Two hours apart, each soft entry (an hour) had run out before the next: in order,
        # the entry on file begins at the fifth, and so it does here.
        assert (entry.level, entry.expires_at, entry.created_at) == (
            Level.HARD,
            times[4] + timedelta(days=7),
            times[4],
        )
        assert entry.reason.startswith("5 transient bounces within 1d")
        assert entry.ses_message_id == docs[4][1]["mail"]["messageId"]
        notices = await store.notices()
        assert [(n.record.reason, n.record.submission_id) for n in notices] == [
            ("soft_bounce_escalated", docs[4][0])
        ]

    in_store(place, scenario)


def test_a_batch_decides_each_event_on_what_came_before_it_in_the_batch(place: Place) -> None:
    """Its events are logged together, but an event later in the batch is no history of one
    before it: five transient bounces and then an open, in one batch, end as the six do
    one batch each (the open had not come when the fifth escalated)."""
    times = [T0 + timedelta(hours=h) for h in (0, 2, 4, 6, 8)]

    def events(addr: str) -> list[str]:
        docs = [
            bounce(mail_of(f"0100batch{i}-{addr}", [addr], sent_at=at), [addr], "Transient", "General", at=at)
            for i, at in enumerate(times)
        ]
        opened = mail_of(f"0100batch-open-{addr}", [addr], sent_at=times[-1])
        docs.append({**per_message("Open", opened, {"timestamp": iso(times[-1] + timedelta(hours=1))})})
        return [json.dumps(d) for d in docs]

    async def scenario(store: Store) -> None:
        now = T0 + timedelta(days=1)
        await apply_batch(store, [Incoming(d, "test") for d in events("together@example.org")], CONFIG, now)
        for doc in events("alone@example.org"):
            await apply_batch(store, [Incoming(doc, "test")], CONFIG, now)
        together, alone = (
            await store.suppressions_of("together@example.org"),
            await store.suppressions_of("alone@example.org"),
        )
        assert [(e.level, e.created_at, e.expires_at, e.reason) for e in together] == [
            (e.level, e.created_at, e.expires_at, e.reason) for e in alone
        ]
        assert [e.level for e in alone] == [Level.HARD]

    in_store(place, scenario)
