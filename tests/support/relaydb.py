"""Reading and seeding a relay's store from tests, through the real Store class."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

from relay.store import Store
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import utcnow


def suppress(
    data_dir: Path,
    address: str,
    *,
    klass: str = ALL,
    cause: Cause = Cause.BOUNCE,
    level: Level = Level.HARD,
    reason: str = "Permanent/General: smtp; 550 5.1.1 user unknown",
    days: float | None = None,
) -> None:
    """Record a suppression the way the feedback consumer would."""
    now = utcnow()
    entry = Suppression(
        address=address,
        klass=klass,
        level=level,
        cause=cause,
        reason=reason,
        created_at=now,
        updated_at=now,
        expires_at=None if days is None else now + timedelta(days=days),
    )

    async def go() -> None:
        store = await Store.open(data_dir / "relay.db")
        try:
            await store.merge_suppression(entry)
        finally:
            await store.close()

    asyncio.run(go())


def create_store(data_dir: Path) -> None:
    """An empty store, as a relay that has run but seen nothing leaves it (read commands need one)."""

    async def go() -> None:
        await (await Store.open(data_dir / "relay.db")).close()

    asyncio.run(go())


def count_rows(data_dir: Path, table: str) -> int:
    """Row count by plain sqlite3: what is on disk, whatever the relay process believes."""
    db = sqlite3.connect(data_dir / "relay.db")
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()
