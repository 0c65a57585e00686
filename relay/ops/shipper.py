"""The state shipper: this host's outbox to the shared state (PostgreSQL), in order.

With `[state] url` set, the intake's accepts, the sender's outcomes and the refusal
counts commit locally first, each with an outbox row (relay/store/outbox.py). This
loop, in the worker, ships those rows a batch at a time: woken by the intake's
accepts (the byte serve sends the worker for each) and the sender's outcomes, else
every second. A batch is applied to PostgreSQL in one transaction and then deleted
locally; shipping a batch again after a crash between the two changes nothing.

PostgreSQL away: the backlog waits in the local file (the intake and the sender go
on), the shipper tries again with a doubling pause up to MAX_BACKOFF, says once that
it cannot ship and once that it can again, and `ses-relay state check` and the
`ses_relay_state_outbox_backlog` gauge show what waits. Once caught up it prunes,
a bounded batch at a time, the local submissions PostgreSQL keeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from relay.loop import Loop
from relay.ops import services
from relay.store import Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.shipper")

FIRST_BACKOFF = 0.5  # seconds before the first retry after a failed shipment
MAX_BACKOFF = 5.0  # the longest pause between retries: the backlog ships soon after PostgreSQL is back
PRUNE_BATCH = 500  # local submissions dropped per prune transaction (a short hold of the write lock)
PRUNE_EVERY = 1.0  # seconds between prune rounds at most
KEEP_AT_LEAST = timedelta(minutes=10)  # local copies kept after their last change, at least
STOP_SHIPPING_SECONDS = 5.0  # at stop: how long to go on shipping what is left


class StateShipper(Loop):
    """Ships the outbox; `keep` is how long local copies outlive their last change."""

    def __init__(
        self, store: Store, *, keep: timedelta = KEEP_AT_LEAST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.store = store
        self.keep = max(keep, KEEP_AT_LEAST)
        self.clock = clock
        self.interval = services.every("state-shipper")
        self.failing_since: float | None = None  # clock time of the first failure in a row
        self._backoff = FIRST_BACKOFF
        self._pruned_at = float("-inf")
        self.shipped = 0  # rows shipped since start

    async def tick(self) -> float:
        try:
            shipped = await self.store.ship_outbox()
        except Exception as exc:  # PostgreSQL away, or a row it refuses: the backlog waits, visibly
            return await self._failed(exc)
        self._recovered()
        self.shipped += shipped.rows
        if shipped.more:
            return 0
        await self._prune()
        return self.interval

    async def _failed(self, exc: Exception) -> float:
        if self.failing_since is None:
            self.failing_since = self.clock()
            waiting, _ = await self._backlog()
            log.warning(
                "cannot ship to the shared state, %s row(s) wait in the local outbox; retrying: %s",
                waiting, exc, exc_info=not isinstance(exc, StoreError),  # anything else is a bug: its trace
            )  # fmt: skip
        pause, self._backoff = self._backoff, min(self._backoff * 2, MAX_BACKOFF)
        return pause

    def _recovered(self) -> None:
        self._backoff = FIRST_BACKOFF
        if self.failing_since is not None:
            log.info(
                "shipping to the shared state again after %.0f s; the local outbox catches up",
                self.clock() - self.failing_since,
            )
            self.failing_since = None

    async def _backlog(self) -> tuple[int | str, float | None]:
        try:
            return await self.store.outbox_backlog()
        except StoreError:
            return "some", None

    async def _prune(self) -> None:
        """One bounded batch of local copies PostgreSQL keeps, at most every PRUNE_EVERY."""
        now = self.clock()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            await self.store.prune_shipped(utcnow() - self.keep, PRUNE_BATCH)
        except StoreError as exc:
            log.warning("cannot prune shipped submissions from the local file: %s", exc)

    async def on_stop(self) -> None:
        """Ship what is left before the worker exits, for a few seconds at most."""
        deadline = self.clock() + STOP_SHIPPING_SECONDS
        try:
            while self.clock() < deadline and (await self.store.ship_outbox()).more:
                pass
        except Exception as exc:  # what is left ships at the next start
            log.debug("outbox left to ship at the next start: %s", exc)
