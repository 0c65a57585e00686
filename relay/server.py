"""SMTP intake: aiosmtpd does the protocol, this handler answers one question per stage.

RCPT: is the address usable and not suppressed in every class? DATA: which class is
the message, which recipients are suppressed for it, and is everything durably
committed? Only after `Store.accept` returns does the client get 250; any store
failure is a 451 with nothing half-written (the store's transaction guarantees it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import headers as hdr
from relay import replies
from relay.addresses import AddressError, normalise
from relay.classes import ClassError, message_tags, resolve
from relay.config import Config, ListenerConfig
from relay.store import ClassState, NewRecipient, NewSubmission, NoticeRecord, Store, StoreError
from relay.suppression import blocking, refusal
from relay.timeutil import new_id, utcnow

log = logging.getLogger("ses_relay.smtp")

NULL_SENDER = ""


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on the replies it composes itself."""

    async def push(self, status: str) -> None:
        await super().push(replies.enhance(status, self.data_size_limit))


@dataclass
class IntakeHandler:
    """The aiosmtpd handler of one listener."""

    store: Store
    config: Config
    listener: ListenerConfig
    on_accepted: Callable[[str], None] = lambda _sid: None
    paused: Callable[[str], ClassState | None] = lambda _klass: None  # the reputation guard's view

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.listener.allow_networks]

    def may_relay(self, session: Session) -> bool:
        """Without AUTH, only clients in the listener's allow_networks may relay (no open relay)."""
        peer = session.peer
        if not isinstance(peer, tuple):
            return False
        try:
            ip = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self.may_relay(session):
            log.warning("refused MAIL from %s: not in allow_networks and not authenticated", session.peer)
            return replies.AUTH_REQUIRED
        if address in ("<>", ""):
            sender = NULL_SENDER
        else:
            try:
                sender = normalise(address)
            except AddressError as exc:
                return f"{replies.BAD_SENDER}: {exc.why}"
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.limits.recipients:
            return f"{replies.TOO_MANY_RECIPIENTS}: at most {self.config.limits.recipients} per message"
        try:
            recipient = normalise(address)
        except AddressError as exc:
            return f"{replies.BAD_RECIPIENT}: {exc.why}"
        now = utcnow()
        try:
            entries = (await self.store.suppressions_for([recipient], now))[recipient]
            entry = blocking(entries, None, now)
            if entry is not None:
                await self.store.note_refused([(entry.address, entry.klass)], now)
                code, text = refusal(entry)
                log.info("refused RCPT %s: %s", recipient, text)
                return replies.suppressed(code, text)
        except StoreError as exc:
            log.error("RCPT %s: %s", recipient, exc)
            return replies.STORE_UNAVAILABLE
        if recipient not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient)
            envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        assert isinstance(data, bytes)
        msg = hdr.parse(data)
        try:
            resolution = resolve(msg, self.config, listener_class=self.listener.default_class)
            tags = message_tags(msg)
        except ClassError as exc:
            return replies.BAD_CONTENT.format(detail=exc)
        klass = resolution.klass
        held = self.paused(klass)
        if held is not None and self.config.guard.action == "refuse":
            log.info("refused DATA for paused class %s", klass)
            return replies.CLASS_PAUSED.format(klass=klass, reason=held.reason)
        now = utcnow()
        try:
            found = await self.store.suppressions_for(envelope.rcpt_tos, now)
        except StoreError as exc:
            log.error("DATA: %s", exc)
            return replies.STORE_UNAVAILABLE

        recipients: list[NewRecipient] = []
        refused: list[tuple[str, str]] = []
        for address in envelope.rcpt_tos:
            entry = blocking(found[address], klass, now)
            if entry is None:
                recipients.append(NewRecipient(address, "queued"))
            else:
                recipients.append(NewRecipient(address, "suppressed", refusal(entry)[1]))
                refused.append((entry.address, entry.klass))
        if not any(r.status == "queued" for r in recipients):
            try:
                await self.store.note_refused(refused, now)
            except StoreError as exc:
                log.warning("could not count refusals: %s", exc)
            return replies.ALL_SUPPRESSED.format(klass=klass)

        peer = session.peer
        client_ip = peer[0] if isinstance(peer, tuple) else None
        mail_from = "" if envelope.mail_from == "<>" else (envelope.mail_from or "")
        submission = NewSubmission(
            id=new_id(now),
            mail_from=mail_from,
            klass=klass,
            class_source=resolution.source,
            configuration_set=self.config.classes[klass].configuration_set,
            tags=tags,
            header_from=hdr.first(msg, "From"),
            subject=hdr.first(msg, "Subject"),
            message_id=hdr.first(msg, "Message-ID"),
            headers=hdr.header_text(data),
            size=len(data),
            client_ip=client_ip,
            auth_user=None,
            created_at=now,
            recipients=tuple(recipients),
            refused=tuple(refused),
        )
        notices: list[NoticeRecord] = []
        if mail_from and self.config.notices.on_suppressed_at_data:
            notices = [
                NoticeRecord(
                    dedupe_key=f"{submission.id}:{r.address}:suppressed",
                    reason="suppressed",
                    recipient=r.address,
                    sender=mail_from,
                    submission_id=submission.id,
                    klass=klass,
                    status="5.7.1",
                    extra=r.detail,
                )
                for r in recipients
                if r.status == "suppressed"
            ]
        try:
            await self.store.accept(submission, data, time.time(), notices)
        except StoreError as exc:
            log.error("DATA from %s: %s", mail_from or "<>", exc)
            return replies.STORE_UNAVAILABLE
        suppressed = len(recipients) - sum(r.status == "queued" for r in recipients)
        log.info(
            "accepted %s from <%s> class=%s (%s) recipients=%d suppressed=%d size=%d",
            submission.id,
            mail_from,
            klass,
            resolution.source,
            len(recipients),
            suppressed,
            len(data),
        )
        self.on_accepted(submission.id)
        return replies.queued(submission.id)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in SMTP session", exc_info=error)
        return replies.INTERNAL_ERROR


async def start_listener(
    handler: IntakeHandler, *, hostname: str | None = None, idle_timeout: float = 300.0
) -> asyncio.Server:
    """Bind one listener on the running loop (the same loop as the rest of serve)."""
    listener = handler.listener
    name = hostname or socket.gethostname()
    loop = asyncio.get_running_loop()

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            data_size_limit=handler.config.limits.message_size,
            enable_SMTPUTF8=False,
            decode_data=False,
            hostname=name,
            ident="ses-relay",
            timeout=idle_timeout,
        )

    return await loop.create_server(factory, host=listener.host, port=listener.port)
