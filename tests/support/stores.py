"""A real Store for store-level tests (a tmp dir, and a PostgreSQL database when the state is
shared), what they accept, and the feedback batch applied to it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config, StateConfig
from relay.store import NewRecipient, NewSubmission, Store
from relay.timeutil import new_id, to_text
from tests.support.entries import NOW

CONFIG = Config()


@dataclass(frozen=True)
class Place:
    """Where a test's store lives: a data dir, and the shared state's database (None: SQLite only)."""

    data_dir: Path
    state_url: str | None = None

    @property
    def state(self) -> StateConfig | None:
        return None if self.state_url is None else StateConfig(url=self.state_url)

    async def open(self, **kw: Any) -> Store:
        return await Store.open(self.data_dir / "relay.db", state=self.state, **kw)

    def rows(self, sql: str, *params: Any) -> list[Any]:
        """What the state holds, read straight from its database (`?` placeholders).

        Rows index by position and by column name, as sqlite3.Row does; times read from
        PostgreSQL come back as the stored text SQLite keeps, so that one assertion
        serves both.
        """
        if self.state_url is None:
            db = sqlite3.connect(self.data_dir / "relay.db")
            db.row_factory = sqlite3.Row
            try:
                return list(db.execute(sql, params))
            finally:
                db.close()
        import psycopg

        from relay.store.postgres import translate

        with psycopg.connect(self.state_url) as conn:
            cur = conn.execute(translate(sql), params)
            names = tuple(d.name for d in cur.description or ())
            return [Row(tuple(_as_stored(v) for v in values), names) for values in cur.fetchall()]


class Row(tuple):
    """A row that indexes by position and by column name."""

    names: tuple[str, ...]

    def __new__(cls, values: tuple[Any, ...], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row.names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names.index(key) if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


def _as_stored(value: Any) -> Any:
    return to_text(value) if isinstance(value, datetime) else value


async def sync_mirror(store: Store, place: Place) -> None:
    """With a shared state, bring the store's local mirror up to date as serve's state mirror
    does (one round, on connections of its own); with one host there is nothing to do."""
    if place.state is None:
        return
    from relay.ops.state_mirror import StateMirror

    mirror = StateMirror(store, place.state)
    try:
        await mirror.prepare()
    finally:
        await mirror.close()


def in_store(where: Path | Place, scenario: Callable[[Store], Awaitable[None]]) -> None:
    """Run `scenario` against a fresh store (a tmp dir, or a Place), closing it whatever happens."""
    place = where if isinstance(where, Place) else Place(where)

    async def go() -> None:
        store = await place.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(go())


async def apply(store: Store, *docs: dict[str, Any] | str, now: datetime) -> BatchResult:
    """One batch, as one SQS receive would deliver it."""
    batch = [Incoming(d if isinstance(d, str) else json.dumps(d), "test") for d in docs]
    return await apply_batch(store, batch, CONFIG, now)


async def shipped(store: Store) -> int:
    """Ship the outbox until it is empty, as the worker's shipper does (nothing to do on SQLite alone).

    With a shared state an accept, an outcome or a refusal count reaches PostgreSQL
    when it is shipped: a test that reads the state after writing one ships first.
    """
    await store._local.write(lambda _db: None)  # refusal counts noted so far ride along with a commit
    rows = 0
    for _ in range(10_000):  # bounded: a test's outbox is far smaller
        done = await store.ship_outbox()
        rows += done.rows
        if not done.more:
            return rows
    raise AssertionError("the outbox did not empty")


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
