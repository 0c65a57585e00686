"""A real Store in a tmp dir for store-level tests, and the feedback batch applied to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config
from relay.store import Store

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
