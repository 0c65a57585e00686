"""The sender claims ahead: one spool read fills many SES slots, and no more than
`ses.concurrency` calls are ever at SES at once."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from relay.config import Config
from relay.sending.sender import Sender
from relay.sending.ses_api import SendRequest
from relay.store import Store
from tests.support.stores import new_submission

CONCURRENCY = 4
MESSAGES = 40


class SlowSes:
    """A SesApi that takes 50 ms a call and notes how many calls overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = self.calls = 0

    def send_raw(self, request: SendRequest) -> str:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
            self.calls += 1
            return f"m-{self.calls}"

    def max_send_rate(self) -> float:
        return 1000.0


def test_slots_stay_full_with_few_spool_reads(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "relay.db")
        try:
            for i in range(MESSAGES):
                subject = f"m{i}"
                await store.accept(
                    new_submission((f"r{i}@example.org",), subject=subject), b"Subject: x\r\n\r\nx\r\n", 0.0
                )
            ses = SlowSes()
            config = Config.model_validate({"ses": {"max_send_rate": 1000.0, "concurrency": CONCURRENCY}})
            sender = Sender(store, ses, config)
            await sender.configure_rate()
            reads: list[int] = []  # how many messages each spool read found
            due = store.due

            async def counted(*args: object, **kw: object) -> object:
                found = await due(*args, **kw)  # type: ignore[arg-type]
                if found:
                    reads.append(len(found))
                return found

            store.due = counted  # type: ignore[method-assign]
            deadline = time.monotonic() + 30
            while ses.calls < MESSAGES and time.monotonic() < deadline:
                if await sender.tick():  # nothing left to claim: the sends in flight end it
                    await asyncio.sleep(0.005)
            await sender.on_stop()
            assert ses.calls == MESSAGES
            assert ses.most == CONCURRENCY  # every slot used, never one more
            assert sum(reads) == MESSAGES
            assert len(reads) <= MESSAGES // CONCURRENCY  # a read per batch, not per message
            assert min(reads[:-1]) >= CONCURRENCY
            assert (await store.spool_stats())[0] == 0
        finally:
            await store.close()

    asyncio.run(scenario())
