"""Events that arrive before the sender has recorded their SES message id, left to chance.

A burst through `serve --sandbox`: the sandbox publishes each Delivery as soon as it
"sends", so the consumer and the sender race to commit, and every recipient must
still end `delivered` (the deterministic orders: tests/store/test_late_events.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import sqlite3

from relay.store import Store
from tests.conftest import wait_until
from tests.support.load import Load, Stage

SUCCESS = "success@simulator.amazonses.com"
BURST = 500


def test_a_burst_through_the_sandbox_leaves_no_recipient_stuck_at_sent(relay_factory) -> None:
    """500 messages at once: every Delivery event must end as `delivered`, whichever commit won."""
    relay = relay_factory(sandbox=True)
    load = Load("127.0.0.1", relay.port, n=BURST, connections=20, recipients=lambda _i: [SUCCESS]).start()
    outcomes = load.join()
    assert [o for o in outcomes if o.stage is not Stage.ACCEPTED] == []
    sids = [o.sid for o in outcomes]
    assert len(set(sids)) == BURST

    db_path = relay.data_dir / "relay.db"

    def count(sql: str) -> int:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()

    wait_until(
        lambda: count("SELECT count(*) FROM events WHERE kind = 'delivery'") >= BURST,
        timeout=120,
        interval=0.5,
        what=f"{BURST} Delivery events applied",
    )
    wait_until(
        lambda: count("SELECT count(*) FROM recipients WHERE status = 'delivered'") >= BURST,
        timeout=15,
        interval=0.5,
        what="every recipient delivered (not delivered when the last event was in: "
        + str(count("SELECT count(*) FROM recipients WHERE status <> 'delivered'"))
        + ")",
    )

    async def statuses() -> dict[str, list[tuple[str, str | None]]]:
        store = await Store.open(db_path)
        try:
            out = {}
            for sid in sids:
                sub = await store.submission(sid)
                assert sub is not None
                out[sid] = [(r.status, r.ses_message_id) for r in sub.recipients]
            return out
        finally:
            await store.close()

    everything = asyncio.run(statuses())
    assert all(len(v) == 1 and v[0][0] == "delivered" and v[0][1] for v in everything.values())
    # Through the CLI a user runs: a sample, in parallel (a process each costs ~0.2 s).
    sample = random.Random(5).sample(sids, 40)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        shown = list(pool.map(lambda sid: relay.json("submission", "show", sid), sample))
    for sid, doc in zip(sample, shown, strict=True):
        assert doc["id"] == sid
        assert [(r["address"], r["status"]) for r in doc["recipients"]] == [(SUCCESS, "delivered")]
    assert "unexpected error" not in relay.log()
