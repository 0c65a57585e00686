"""The store side of suppression imports: read what is on file, write what changes, in chunks.

Chunks keep each read's parameter list and each write transaction short, so a
100,000-row import neither hits SQLite's variable limit nor holds the writer lock
while the relay is running.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from relay.store import Store
from relay.suppression import Suppression
from relay.suppression_history import Source

CHUNK = 500


async def on_file(store: Store, addresses: Iterable[str], now: datetime) -> dict[str, list[Suppression]]:
    """The unexpired entries of each address, in every class."""
    wanted = list(dict.fromkeys(addresses))
    out: dict[str, list[Suppression]] = {}
    for start in range(0, len(wanted), CHUNK):
        out.update(await store.suppressions_for(wanted[start : start + CHUNK], now))
    return out


async def merge_all(
    store: Store, entries: Sequence[Suppression], *, actor: str, action: str, detail: str, source: Source
) -> None:
    """Merge `entries` (each audited under `action`, and its changes kept in the history as
    made by `source`), one transaction a chunk."""
    for start in range(0, len(entries), CHUNK):
        chunk = entries[start : start + CHUNK]
        await store.merge_suppressions(chunk, actor=actor, action=action, detail=detail, source=source)
