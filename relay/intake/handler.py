"""SMTP intake: aiosmtpd does the protocol (relay/intake/smtp.py); this handler answers one
question per stage.

RCPT: is the address usable and not suppressed in every class? DATA: which class is
the message, which recipients are suppressed for it, and is everything durably
committed? Only after `Store.accept` returns does the client get 250; any store
failure is a 451 with nothing half-written (the store's transaction guarantees it).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import headers as hdr
from relay.addresses import AddressError, normalise
from relay.config import Config, ListenerConfig
from relay.intake import inputcheck, replies
from relay.intake.auth import Authenticator
from relay.intake.classes import ClassError, message_tags, resolve
from relay.intake.limits import ClientLimits
from relay.intake.users import ANY_SENDER, User
from relay.networks import in_networks, is_loopback_ip, peer_ip
from relay.ops import metrics
from relay.ops.guard import paused_by
from relay.store import ClassState, NewRecipient, NewSubmission, NoticeRecord, Store, StoreError
from relay.suppression import blocking, refusal
from relay.timeutil import new_id, utcnow
from relay.vocabulary import NoticeReason, Status

log = logging.getLogger("ses_relay.smtp")

NULL_SENDER = ""


def client_of(session: Session | None) -> str:
    """The client's address for logs and per-client counters."""
    if session is None:
        return "unknown"
    ip = peer_ip(session.peer)
    return str(ip) if ip is not None else str(session.peer)


@dataclass
class IntakeHandler:
    """The aiosmtpd handler of one listener."""

    store: Store
    config: Config
    listener: ListenerConfig
    on_accepted: Callable[[str], None] = lambda _sid: None
    paused: Callable[[str], ClassState | None] = lambda _klass: None  # the reputation guard's view
    # Shared by every listener of a relay (cli builds one of each); the defaults suit tests.
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    authenticator: Authenticator | None = None

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.listener.allow_networks]

    def may_relay(self, session: Session) -> bool:
        """Without AUTH, only clients in the listener's allow_networks may relay (no open relay)."""
        if self.listener.require_auth:
            return False
        return in_networks(peer_ip(session.peer), self._networks)

    def trusted(self, session: Session) -> bool:
        """May relay: authenticated, or in allow_networks on a listener without require_auth."""
        return self.user_of(session) is not None or self.may_relay(session)

    def plaintext_auth_allowed(self, session: Session) -> bool:
        return self.config.auth.allow_plaintext_loopback and is_loopback_ip(peer_ip(session.peer))

    def user_of(self, session: Session) -> User | None:
        """The authenticated user, as the users file says now (rules may change while connected)."""
        if not session.authenticated or not isinstance(session.auth_data, User):
            return None
        if self.authenticator is None:
            return None
        return self.authenticator.source.get(session.auth_data.name)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.authenticator is None or not self.authenticator.has_users():
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        # Both are true of every session: commands are read one at a time from a buffered
        # stream, and every reply after EHLO carries an enhanced code (relay/intake/replies.py).
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        client = client_of(session)
        user = self.user_of(session)
        if user is None and not self.may_relay(session):
            why = "the listener requires AUTH" if self.listener.require_auth else "not in allow_networks"
            log.warning("refused MAIL from %s: %s and not authenticated", client, why)
            return replies.AUTH_REQUIRED
        if address in ("<>", ""):
            sender = NULL_SENDER
        else:
            try:
                sender = normalise(address)
            except AddressError as exc:
                return f"{replies.BAD_SENDER}: {exc.why}"
        if user is not None and sender and not user.may_send_as(sender):
            log.warning("refused MAIL FROM <%s> from %s: user %s may not use it", sender, client, user.name)
            return replies.sender_not_permitted(user.name, sender)
        limits = self.client_limits
        if not limits.per_ip.allow(client):
            log.warning("refused MAIL from %s: over limits.messages_per_minute_per_ip", client)
            return replies.rate_limited(f"client {client}", limits.per_ip.per_minute)
        if user is not None and not limits.per_user.allow(user.name, user.rate_per_minute):
            log.warning("refused MAIL from %s: user %s is over its rate_per_minute", client, user.name)
            return replies.rate_limited(f"user {user.name}", user.rate_per_minute)
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.limits.recipients:
            metrics.refused(metrics.TOO_MANY)
            return f"{replies.TOO_MANY_RECIPIENTS}: at most {self.config.limits.recipients} per message"
        try:
            recipient = normalise(address)
        except AddressError as exc:
            metrics.refused(metrics.MALFORMED)
            return f"{replies.BAD_RECIPIENT}: {exc.why}"
        now = utcnow()
        try:
            entries = (await self.store.suppressions_for([recipient], now, mirror=True))[recipient]
            entry = blocking(entries, None, now)
            if entry is not None:
                self.store.note_refused([(entry.address, entry.klass)], now)
                code, text = refusal(entry)
                log.info("refused RCPT %s: %s", recipient, text)
                metrics.refused(metrics.refusal_reason(entry))
                return replies.suppressed(code, text)
        except StoreError as exc:
            log.error("RCPT %s: %s", recipient, exc)
            metrics.refused(metrics.STORE_UNAVAILABLE)
            return replies.STORE_UNAVAILABLE
        if recipient not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient)
            envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    def _screen(
        self, data: bytes, user: User | None, client: str
    ) -> tuple[bytes, hdr.Headers, str | None]:
        """Bad-input rules (relay/intake/inputcheck.py): the bytes to keep and their header
        block, or a refusal. The block is read once; only the rare rewrites read it again."""
        headers = hdr.Headers.of(data)
        problem = inputcheck.header_problem(headers)
        if problem is not None:
            log.warning("refused DATA from %s: %s", client, problem)
            return data, headers, replies.BAD_CONTENT.format(detail=f"Message refused: {problem}")
        if inputcheck.has_bare_line_endings(data):
            if self.config.limits.bare_line_endings == "reject":
                log.warning("refused DATA from %s: bare CR or LF in the message", client)
                return data, headers, replies.BARE_LINE_ENDINGS
            data = inputcheck.normalise_line_endings(data)
            headers = hdr.Headers.of(data)
        if (user is None or not user.may_set_arns) and inputcheck.arn_headers_present(headers):
            who = "unauthenticated clients" if user is None else f"user {user.name}"
            log.info("removed X-SES-*-ARN headers from %s: %s may not set them", client, who)
            data = inputcheck.strip_arn_headers(data)
            headers = hdr.Headers.of(data)
        return data, headers, None

    @staticmethod
    def _from_refusal(user: User, headers: hdr.Headers) -> str | None:
        """The From header's addresses must all be the user's permitted senders."""
        if ANY_SENDER in user.senders:
            return None
        msg = headers.structured({"from"})
        specs: list[str] = []
        try:
            for value in msg.get_all("From", []):
                specs += [a.addr_spec for a in value.addresses if a.addr_spec]
        except (AttributeError, IndexError, TypeError, ValueError):
            specs = []
        if not specs:
            return replies.NO_FROM.format(user=user.name)
        for spec in specs:
            try:
                permitted = user.may_send_as(normalise(spec))
            except AddressError:
                permitted = False
            if not permitted:
                return replies.FROM_NOT_PERMITTED.format(user=user.name, address=spec)
        return None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        assert isinstance(data, bytes)
        client = client_of(session)
        user = self.user_of(session)
        # Bare LFs were normalised while reading (relay/intake/dataread.py); a bare CR is left for _screen.
        normalised = getattr(envelope, "bare_line_ends", 0) > 0 or inputcheck.has_bare_line_endings(data)
        data, headers, refused_why = self._screen(data, user, client)
        if refused_why is not None:
            return refused_why
        if user is not None:
            from_refusal = self._from_refusal(user, headers)
            if from_refusal is not None:
                log.warning("refused DATA from %s: %s", client, from_refusal)
                return from_refusal
        try:
            resolution = resolve(
                headers,
                self.config,
                user_class=user.default_class if user is not None else None,
                listener_class=self.listener.default_class,
            )
            tags = message_tags(headers)
        except ClassError as exc:
            return replies.BAD_CONTENT.format(detail=exc)
        klass = resolution.klass
        held = self.paused(klass)
        if held is not None and self.config.guard.action == "refuse":
            log.info("refused DATA for paused class %s", klass)
            metrics.refused(metrics.CLASS_PAUSED, len(envelope.rcpt_tos))
            return replies.class_paused(klass, paused_by(held.changed_by), held.reason)
        now = utcnow()
        try:
            found = await self.store.suppressions_for(envelope.rcpt_tos, now, mirror=True)
        except StoreError as exc:
            log.error("DATA: %s", exc)
            return replies.STORE_UNAVAILABLE

        recipients: list[NewRecipient] = []
        refused: list[tuple[str, str]] = []
        for address in envelope.rcpt_tos:
            entry = blocking(found[address], klass, now)
            if entry is None:
                recipients.append(NewRecipient(address, Status.QUEUED))
            else:
                recipients.append(NewRecipient(address, Status.SUPPRESSED, refusal(entry)[1]))
                metrics.refused(metrics.refusal_reason(entry))
                refused.append((entry.address, entry.klass))
        if not any(r.status == Status.QUEUED for r in recipients):
            self.store.note_refused(refused, now)
            return replies.ALL_SUPPRESSED.format(klass=klass)

        ip = peer_ip(session.peer)
        client_ip = str(ip) if ip is not None else None
        mail_from = "" if envelope.mail_from == "<>" else (envelope.mail_from or "")
        submission = NewSubmission(
            id=new_id(now),
            mail_from=mail_from,
            klass=klass,
            class_source=resolution.source,
            configuration_set=self.config.classes[klass].configuration_set,
            tags=tags,
            header_from=headers.first("From"),
            subject=hdr.decoded(headers.first("Subject")),
            message_id=headers.first("Message-ID"),
            headers=headers.text,
            size=len(data),
            client_ip=client_ip,
            auth_user=user.name if user is not None else None,
            created_at=now,
            recipients=tuple(recipients),
            refused=tuple(refused),
        )
        notices: list[NoticeRecord] = []
        if mail_from and self.config.notices.on_suppressed_at_data:
            notices = [
                NoticeRecord(
                    dedupe_key=f"{submission.id}:{r.address}:{NoticeReason.SUPPRESSED}",
                    reason=NoticeReason.SUPPRESSED,
                    recipient=r.address,
                    sender=mail_from,
                    submission_id=submission.id,
                    klass=klass,
                    status="5.7.1",
                    extra=r.detail,
                )
                for r in recipients
                if r.status == Status.SUPPRESSED
            ]
        try:
            await self.store.accept(submission, data, time.time(), notices)
        except StoreError as exc:
            log.error("DATA from %s: %s", mail_from or "<>", exc)
            return replies.STORE_UNAVAILABLE
        suppressed = len(recipients) - sum(r.status == Status.QUEUED for r in recipients)
        log.info(
            "accepted %s from <%s> client=%s class=%s (%s) recipients=%d suppressed=%d size=%d%s",
            submission.id,
            mail_from,
            client if user is None else f"{client} user={user.name}",
            klass,
            resolution.source,
            len(recipients),
            suppressed,
            len(data),
            " (bare line endings normalised)" if normalised else "",
        )
        self.on_accepted(submission.id)
        metrics.accepted(klass)
        return replies.queued(submission.id)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in SMTP session", exc_info=error)
        return replies.INTERNAL_ERROR
