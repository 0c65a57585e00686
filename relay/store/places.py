"""Where a Store keeps things, seen from outside one: probing the state without opening
it (`ses-relay state check`), the id this data dir's relay goes by in a shared state,
and the stand-in for a spool that a state-only Store (the admin CLI) does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.store import outbox
from relay.store.records import StateProbe, StoreError

if TYPE_CHECKING:
    from relay.config import StateConfig

HOST_ID_FILE = "host-id"


def probe_state(path: Path, state: StateConfig) -> StateProbe:
    """Where the state is kept and whether this ses-relay can use it, changing nothing (blocking)."""
    if state.shared:
        import dataclasses
        import time

        from relay.store import mirror, postgres, sqlite

        found = postgres.probe(state.url, state.connect_timeout.total_seconds())
        found = dataclasses.replace(found, mirror=mirror.probe(path, state, reachable=found.reachable))
        return outbox.with_backlog(found, sqlite.outbox_backlog(path), time.time())
    from relay.store import sqlite

    return sqlite.probe(path)


def host_id(data_dir: Path) -> str:
    """The id this data dir's relay goes by in the shared state: `<hostname>-<8 hex digits>`.

    Kept in `<data-dir>/host-id`, so that it outlives restarts and follows the data dir
    (with its spool) to another machine, and two relays on one machine differ.
    """
    import secrets
    import socket

    path = data_dir / HOST_ID_FILE
    try:
        known = path.read_text().strip()
    except FileNotFoundError:
        known = ""
    if known:
        return known
    made = f"{socket.gethostname() or 'relay'}-{secrets.token_hex(4)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    tmp.replace(path)
    return made


class NoSpool:
    """The local half of a Store opened for the shared state alone: every use is an error."""

    def _refuse(self) -> StoreError:
        return StoreError("this command opened the shared state only, not a local spool")

    async def write(self, fn: Callable[..., Any]) -> Any:
        raise self._refuse()

    async def write_batched(self, fn: Callable[..., None], item: Any) -> None:
        raise self._refuse()

    def write_soon(self, fn: Callable[..., None], items: Iterable[Any]) -> None:
        raise self._refuse()

    async def read(self, fn: Callable[..., Any]) -> Any:
        raise self._refuse()

    def lookup(self, fn: Callable[..., Any]) -> Any:
        raise self._refuse()

    async def close(self) -> None:
        return None
