"""One send-rate ceiling for every relay on a shared state: heartbeats divide it.

SES's MaxSendRate is the account's (per region), not each host's. With the state in
PostgreSQL every relay's worker beats once a second (relay/store/shared.py: the
`hosts` table) saying whether it has mail to send, and learns how many other relays
are sending; it then sends at its share, `rate / (1 + others)`. A relay with nothing
to send takes no share, so one busy relay among idle ones gets the whole rate; a
relay that stops beating (gone, or cut off) frees its share after
`shared.HOST_LIVE`. While the shared state cannot be reached, a relay keeps the
share it had: the others that can still reach it do the same, and the sum holds.

With one host (SQLite state) there is nothing to share and no heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from relay.loop import Loop
from relay.ops import services
from relay.sending.sender import Sender
from relay.store import Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.sender")

BEAT_SECONDS = services.every("heartbeat")


class Heartbeat(Loop):
    """Beats for this host every BEAT_SECONDS and sets the sender's share of the rate."""

    def __init__(self, store: Store, sender: Sender, *, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__()
        self.store = store
        self.sender = sender
        self.started_at = clock()
        self._cut_off = False  # the last beat failed (warned once)

    async def tick(self) -> float:
        await self.beat(self.sender.busy_since_asked())
        return BEAT_SECONDS

    async def beat(self, sending: bool) -> None:
        try:
            others = await self.store.heartbeat(sending=sending, started_at=self.started_at)
        except StoreError as exc:
            if not self._cut_off:
                log.warning(
                    "cannot reach the shared state to share the send rate; keeping %.4g recipients/s: %s",
                    self.sender.limiter.rate, exc,
                )  # fmt: skip
            self._cut_off = True
            return
        if self._cut_off:
            log.warning("the shared state is back: sharing the send rate again")
            self._cut_off = False
        # This host counts whether it sends or not: its share is what it may send once it starts.
        self.sender.share_rate(1 + others)

    async def on_stop(self) -> None:
        """A last beat that says "not sending", so the others take this host's share at once."""
        await self.beat(False)
