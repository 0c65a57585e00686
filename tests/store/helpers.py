"""Building blocks of the store's own tests: a fresh Store, submissions, plain-sqlite3 reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.store import NewRecipient, NewSubmission, Store
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import new_id

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def in_store(path: Path, scenario: Callable[[Store], Awaitable[None]]) -> None:
    """Run `scenario` against the store file at `path`, closing it whatever happens."""

    async def go() -> None:
        store = await Store.open(path)
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(go())


def submission(recipients: tuple[str, ...], *, sid: str | None = None, subject: str = "hi") -> NewSubmission:
    sid = sid or new_id(T0)
    return NewSubmission(
        id=sid, mail_from="app@example.com", klass="transactional", class_source="default",
        configuration_set="tx", tags=(("team", "a"),), header_from="App <app@example.com>", subject=subject,
        message_id=f"<{sid}@example.com>", headers="Subject: hello\r\n", size=100, client_ip="127.0.0.1",
        auth_user=None, created_at=T0, recipients=tuple(NewRecipient(r, "queued") for r in recipients),
    )  # fmt: skip


def suppression(address: str, *, reason: str = "bounced") -> Suppression:
    return Suppression(
        address=address, klass=ALL, level=Level.HARD, cause=Cause.BOUNCE, reason=reason,
        created_at=T0, updated_at=T0, expires_at=None,
    )  # fmt: skip


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What is on disk, by plain sqlite3, whatever the store's connections believe."""
    db = sqlite3.connect(path)
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()
