"""Delivering owed notices to senders' mailboxes, with retries; none is lost.

The feedback consumer and the sender only *record* notices (in the same transaction
as the outcome they explain). This worker composes each pending one
(feedback.notices.compose), routes it by the sender's domain (feedback.notices.mailboxes), and
delivers it. A temporary failure keeps it pending with backoff; a final refusal
(5xx from the sender's mail server) or a notice that must not be sent (null or
daemon sender, an auto-submitted original) is settled with the reason, so it stays
visible in `ses-relay notices list`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from feedback.notices.compose import NoticeRequest, compose, should_notify
from feedback.notices.mailboxes import DeliveryError, deliver, route_for
from relay.config import Config
from relay.hostname import relay_hostname
from relay.intake.pickup import spool_message
from relay.loop import Loop
from relay.ops import services
from relay.sending.backoff import backoff_delay
from relay.store import NoticeRow, Store, StoreError
from relay.timeutil import utcnow
from relay.vocabulary import NoticeReason, NoticeState, is_one_of

log = logging.getLogger("ses_relay.notices")

POLL_SECONDS = services.every("notifier")
RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 3600.0


def notice_sender(config: Config, hostname: str) -> str:
    return config.notices.sender or f"MAILER-DAEMON@{hostname}"


def request_for(row: NoticeRow, now: datetime) -> NoticeRequest:
    rec = row.record
    return NoticeRequest(
        reason=rec.reason,
        recipient=rec.recipient,
        original_sender=rec.sender,
        original_headers=row.original_headers,
        original_message_id=row.original_message_id,
        original_subject=row.original_subject,
        submission_id=rec.submission_id or "",
        arrival_date=row.arrival_date or row.created_at,
        last_attempt=row.created_at if row.created_at <= now else now,
        status=rec.status,
        diagnostic=rec.diagnostic,
        bounce_type=rec.bounce_type,
        bounce_subtype=rec.bounce_subtype,
        message_class=rec.klass,
        extra=rec.extra,
    )


class MailingLoop(Loop):
    """A worker loop that mails as the relay: from the notice sender, naming the relay's
    host, and through the relay's own spool, after which it wakes the sender so the
    message leaves at once rather than at the sender's next look."""

    def __init__(
        self,
        store: Store,
        config: Config,
        data_dir: Path,
        *,
        hostname: str | None = None,
        wake_sender: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__()
        self.store = store
        self.config = config
        self.data_dir = data_dir
        self.hostname = hostname or relay_hostname(config)
        self.sender = notice_sender(config, self.hostname)
        self.wake_sender = wake_sender
        self.clock = clock


class Notifier(MailingLoop):
    """Delivers the notices that are due, resting POLL_SECONDS whenever none is."""

    async def _ses_send(self, raw: bytes, source: str, destination: str) -> None:
        """The `ses` route: a notice becomes a submission of its own on the relay's spool."""
        try:
            await spool_message(self.store, self.config, raw, source, [destination], origin="notice")
        except StoreError as exc:
            raise DeliveryError(f"cannot spool the notice: {exc}", temporary=True) from exc
        self.wake_sender()

    async def tick(self) -> float:
        try:
            handled = await self.deliver_due()
        except StoreError as exc:
            log.error("cannot read pending notices: %s", exc)
            handled = 0
        return 0.0 if handled else POLL_SECONDS

    async def deliver_due(self) -> int:
        now = self.clock()
        rows = await self.store.due_notices(now)
        for row in rows:
            await self._one(row, now)
        return len(rows)

    async def _settle(self, notice_id: int, state: str, **kw: Any) -> None:
        """Record a notice's outcome; with a shared state, unless another host has taken the
        notice over meanwhile (this one outlasted its lease): then that host's word stands."""
        if not await self.store.settle_notice(notice_id, state, **kw):
            log.warning("notice %d: another relay took it over after this one's lease ran out; "
                        "its outcome there stands (this one: %s)", notice_id, state)  # fmt: skip

    async def _one(self, row: NoticeRow, now: datetime) -> None:
        rec = row.record
        if not is_one_of(NoticeReason, rec.reason):
            await self._settle(row.id, NoticeState.SKIPPED, now=now, error=f"unknown reason {rec.reason!r}")
            return
        req = request_for(row, now)
        why_not = should_notify(req)
        if why_not is not None:
            log.info("notice %d to <%s> not sent: %s", row.id, rec.sender, why_not)
            await self._settle(row.id, NoticeState.SKIPPED, now=now, error=why_not)
            return
        message_id = f"<notice-{row.id}.{rec.submission_id or 'x'}@{self.hostname}>"
        try:
            raw = compose(
                req, notice_sender=self.sender, reporting_mta=self.hostname, now=now, message_id=message_id
            )
            route = route_for(rec.sender, self.config.notices.routes, self.config.notices.default)
            await deliver(
                route,
                notice_sender=self.sender,
                recipient=rec.sender,
                message=raw,
                data_dir=self.data_dir,
                ses_send=self._ses_send,
                local_hostname=self.hostname,
            )
        except DeliveryError as exc:
            if exc.temporary:
                delay = backoff_delay(row.attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
                log.warning("notice %d to <%s> deferred %.0fs: %s", row.id, rec.sender, delay, exc)
                await self._settle(
                    row.id,
                    NoticeState.PENDING,
                    now=now,
                    error=str(exc),
                    next_attempt_at=now + timedelta(seconds=delay),
                )
            else:
                log.warning("notice %d to <%s> refused for good: %s", row.id, rec.sender, exc)
                await self._settle(row.id, NoticeState.FAILED, now=now, error=str(exc))
            return
        except ValueError as exc:
            log.error("notice %d to <%s> cannot be composed: %s", row.id, rec.sender, exc)
            await self._settle(row.id, NoticeState.FAILED, now=now, error=str(exc))
            return
        log.info("notice %d (%s about %s) delivered to <%s>", row.id, rec.reason, rec.recipient, rec.sender)
        await self._settle(row.id, NoticeState.SENT, now=now)
