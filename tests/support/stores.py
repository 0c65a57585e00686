"""A real Store in a tmp dir for store-level tests, what they accept, and the feedback batch applied to it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config
from relay.store import NewRecipient, NewSubmission, Store
from relay.timeutil import new_id
from tests.support.entries import NOW

CONFIG = Config()


def in_store(tmp_path: Path, scenario: Callable[[Store], Awaitable[None]]) -> None:
    """Run `scenario` against a fresh store file, closing it whatever happens."""

    async def go() -> None:
        store = await Store.open(tmp_path / "relay.db")
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(go())


async def apply(store: Store, *docs: dict[str, Any] | str, now: datetime) -> BatchResult:
    """One batch, as one SQS receive would deliver it."""
    batch = [Incoming(d if isinstance(d, str) else json.dumps(d), "test") for d in docs]
    return await apply_batch(store, batch, CONFIG, now)


async def status_of(store: Store, sid: str, address: str) -> str:
    sub = await store.submission(sid)
    assert sub is not None
    return next(r.status for r in sub.recipients if r.address == address)


def new_submission(
    recipients: tuple[str, ...], *, sid: str | None = None, subject: str = "hi", at: datetime = NOW
) -> NewSubmission:
    """A submission as the intake hands it to the store, every recipient queued."""
    sid = sid or new_id(at)
    return NewSubmission(
        id=sid, mail_from="app@example.com", klass="transactional", class_source="default",
        configuration_set="tx", tags=(("team", "a"),), header_from="App <app@example.com>", subject=subject,
        message_id=f"<{sid}@example.com>", headers="Subject: hi\r\n", size=100, client_ip="127.0.0.1",
        auth_user=None, created_at=at, recipients=tuple(NewRecipient(r, "queued") for r in recipients),
    )  # fmt: skip


def db_rows(tmp_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What is in the store file, by plain sqlite3, whatever a Store's connections believe."""
    db = sqlite3.connect(tmp_path / "relay.db")
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()
