"""One way to run a periodic task: work a round, then rest until the next round is due,
a wake-up or a stop.

Every long-running task of serve and its worker is a `Loop` (relay/ops/services.py
lists them). A loop supplies `tick`, one round of work, which says how long to rest
afterwards; the base owns the resting, the early wake-up and the stop, so every task
stops the same way and at once, and none of them can spin or miss a stop.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Iterable


class Loop(abc.ABC):
    """Subclasses implement `tick`; `on_start`/`on_stop` run once around the rounds."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def stop(self) -> asyncio.Event:
        """The event `run` was given: a tick that waits on something also waits on this."""
        return self._stop

    def wake(self, _reason: object = None) -> None:
        """Cut the current rest short (new work has arrived); a wake during a round
        skips the rest that follows it, so none is lost."""
        self._wake.set()

    @abc.abstractmethod
    async def tick(self) -> float | None:
        """One round of work. Returns how long to rest before the next one, in
        seconds (0: at once), or None when the loop has nothing more to do."""

    async def on_start(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Before the first round."""

    async def on_stop(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """After the last round, also when a round raised."""

    def rest_ends_on(self) -> Iterable[Awaitable[object]]:
        """More things whose completion ends a rest early, besides a wake and the stop."""
        return ()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set or `tick` says it is done."""
        self._stop = stop
        await self.on_start()
        try:
            while not stop.is_set():
                self._wake.clear()
                rest = await self.tick()
                if rest is None:
                    return
                await self._rest(rest)
        finally:
            await self.on_stop()

    async def _rest(self, seconds: float) -> None:
        if seconds <= 0 or self._wake.is_set() or self._stop.is_set():
            await asyncio.sleep(0)  # let the rest of the process run between rounds
            return
        waiters = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
            *(asyncio.ensure_future(aw) for aw in self.rest_ends_on()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
