"""The sender worker: spooled messages out to SES, every outcome written back.

Per message: strip internal headers, DKIM-sign when a key exists for the From
domain, then one SES call per chunk of at most 50 pending recipients. Each chunk's
result is committed before the next call, so a crash re-sends at most the chunk in
flight. Retryable errors put the whole message back with exponential backoff until
`ses.retry_max_age`; permanent errors fail the chunk's recipients at once with SES's
text. The spool row goes only when no recipient is left queued.

It runs in serve's worker process, apart from the SMTP intake. The SES call is
synchronous (boto3) and runs in a thread, `ses.concurrency` at a time, so the
worker's other tasks (notices, feedback) keep going while calls are in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relay import headers as hdr
from relay.addresses import AddressError, domain_of, normalise
from relay.config import Config
from relay.loop import Loop
from relay.ops import metrics, services
from relay.sending.backoff import RateLimiter, backoff_delay
from relay.sending.dkim import DkimError, DkimKeys
from relay.sending.dkim_sign import sign
from relay.sending.ses_api import MAX_DESTINATIONS, Disposition, SendRequest, SesApi, SesError
from relay.store import NoticeRecord, SpoolItem, Store, StoreError
from relay.timeutil import utcnow
from relay.vocabulary import NoticeReason, Status, Tag

log = logging.getLogger("ses_relay.sender")

STORE_RETRIES = 5  # attempts to record an outcome SES has already given us
STORE_RETRY_PAUSE = 1.0
STORE_TROUBLE_PAUSE = 30.0  # before a message whose outcome could not be written is tried again
BURST_FRACTION = 0.05  # of a second's sending: keeps any one-second window within ~5 % of the rate
IDLE_POLL_SECONDS = services.every("sender")


@dataclass(frozen=True)
class Prepared:
    """What the worker sends for one message, computed once for all its chunks."""

    raw: bytes
    source: str
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    arns: dict[str, str] = field(default_factory=dict)  # source_arn, from_arn, return_path_arn


def burst_for(rate: float) -> float:
    """The token bucket's size for a rate: a small fraction of a second's sending."""
    return max(1.0, rate * BURST_FRACTION)


def chunks(addresses: tuple[str, ...], size: int = MAX_DESTINATIONS) -> list[tuple[str, ...]]:
    return [addresses[i : i + size] for i in range(0, len(addresses), size)]


def source_address(item: SpoolItem) -> str:
    """SES refuses a null reverse-path; a null-sender message goes out as its From address."""
    if item.submission.mail_from:
        return item.submission.mail_from
    address = from_address(item.submission.header_from)
    if address is None:
        raise SesError("NoSource", "null envelope sender and no usable From header", Disposition.PERMANENT)
    return address


#: `Name <local@domain>`, `"Last, First" <local@domain>` or a bare `local@domain`: the
#: forms nearly every From has, read with one regex. Anything else (comments, groups,
#: several addresses, brackets or quotes inside the name) goes to the email package.
_ATOMS = r'[^<>\s"(),;:\\@\[\]]+'
_SIMPLE_FROM = re.compile(
    rf'\s*(?:(?:"[^"\\]*"\s*|[^"<>,;:()\\@\[\]]*)<({_ATOMS}@{_ATOMS})>|({_ATOMS}@{_ATOMS}))\s*'
)


def from_address(header_from: str | None) -> str | None:
    """The first address of a stored From header, normalised; None when there is none."""
    if not header_from:
        return None
    simple = _SIMPLE_FROM.fullmatch(header_from)
    if simple is None:
        return parsed_from_address(header_from)
    try:
        return normalise(simple.group(1) or simple.group(2))
    except AddressError:
        return None


def parsed_from_address(header_from: str) -> str | None:
    """from_address by the email package's RFC 5322 parser: right for every form, and slow."""
    parsed = hdr.parse(f"From: {header_from}\r\n\r\n".encode())
    try:
        return normalise(parsed["From"].addresses[0].addr_spec)  # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError, AddressError):
        return None


class Sender(Loop):
    """Drains the spool into SES with at most `ses.concurrency` calls in flight."""

    def __init__(
        self,
        store: Store,
        ses: SesApi,
        config: Config,
        *,
        dkim: DkimKeys | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.store = store
        self.ses = ses
        self.config = config
        self.dkim = dkim
        self.limiter = limiter or RateLimiter(0)
        self.account_rate = self.limiter.rate  # the account's ceiling; this host sends its share of it
        self.clock = clock
        self._busy = False  # claimed mail since the heartbeat last asked
        self._slots = asyncio.Semaphore(config.ses.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # submission ids being sent by this process
        self._cooldown: dict[str, float] = {}  # ids whose outcome could not be written: wait a bit

    async def configure_rate(self) -> None:
        """Apply `ses.max_send_rate`; "auto" asks SES (GetSendQuota) once at start."""
        rate = self.config.ses.max_send_rate
        if rate == "auto":
            try:
                rate = await asyncio.to_thread(self.ses.max_send_rate)
            except SesError as exc:
                rate = 1.0
                log.warning("could not read the SES send quota (%s); sending at %.0f/s", exc, rate)
        # A small burst keeps every one-second window near the ceiling; calls larger
        # than the burst still go through and leave the bucket in debt.
        self.account_rate = float(rate)
        self.limiter = RateLimiter(float(rate), burst=burst_for(float(rate)))
        log.info("SES send rate ceiling: %s recipients/s", rate)

    def share_rate(self, hosts: int) -> None:
        """Send at most 1/`hosts` of the account's ceiling: `hosts` relays (this one
        counted) are sending at once, and SES's MaxSendRate is the account's, not each
        host's. Tokens already earned stay earned; waiters wake to the new rate."""
        if math.isinf(self.account_rate):
            return
        rate = self.account_rate / max(1, hosts)
        if not math.isclose(rate, self.limiter.rate):
            self.limiter.set_rate(rate, burst=burst_for(rate))
            log.info("SES send rate: %.4g of %.4g recipients/s (%d relays sending)",
                     rate, self.account_rate, max(1, hosts))  # fmt: skip

    def busy_since_asked(self) -> bool:
        """Whether this sender had mail to send since the last call (claimed, or in flight)."""
        busy, self._busy = self._busy or bool(self._tasks), False
        return busy

    async def on_start(self) -> None:
        released = await self.store.make_all_due()
        if released:
            log.info("%d spooled message(s) from before the restart are due now", released)

    async def tick(self) -> float:
        """Claim what is due; when nothing is, rest until the next retry is due (at most
        IDLE_POLL_SECONDS), a wake from the intake, or the end of the sends in flight."""
        try:
            if await self._claim():
                return 0.0
        except StoreError as exc:
            log.error("cannot read the spool: %s", exc)
        try:
            due = await self.store.next_due()
        except StoreError:
            due = None
        if due is None:
            return IDLE_POLL_SECONDS
        return min(IDLE_POLL_SECONDS, max(0.0, due - self.clock()))

    def rest_ends_on(self) -> list[Awaitable[object]]:
        return [asyncio.wait(set(self._tasks))] if self._tasks else []

    async def on_stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claim(self) -> int:
        # Up to twice `concurrency` messages are claimed, and only `concurrency` of them
        # call SES at a time (self._slots): claiming again once half of that is free
        # keeps every slot busy with one spool read for many messages, not one each.
        concurrency = self.config.ses.concurrency
        if len(self._tasks) > concurrency:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        free = 2 * concurrency - len(self._tasks)
        # Claiming is a read: this worker is the only sender of the spool (serve's
        # supervisor and the worker.lock flock see to it), so what is in flight is
        # simply what this process holds in memory, and a crash frees it all at once.
        now = self.clock()
        self._cooldown = {sid: until for sid, until in self._cooldown.items() if until > now}
        items = await self.store.due(now, free, exclude=self._in_flight | self._cooldown.keys())
        self._busy = self._busy or bool(items)
        for item in items:
            sid = item.submission.id
            self._in_flight.add(sid)
            task = asyncio.create_task(self._process(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t, sid=sid: self._in_flight.discard(sid))
        return len(items)

    async def _process(self, item: SpoolItem) -> None:
        sid = item.submission.id
        try:
            await self._send_all(item)
        except StoreError as exc:
            # Tried again after a pause; at most the chunk whose outcome was lost is resent.
            self._cooldown[sid] = self.clock() + STORE_TROUBLE_PAUSE
            log.error("%s: store trouble while sending, will retry: %s", sid, exc)
        except Exception:
            log.exception("%s: unexpected error while sending; retrying later", sid)
            await self._retry_or_fail(item, item.pending, "internal error (see the relay's log)")

    async def _send_all(self, item: SpoolItem) -> None:
        sid = item.submission.id
        if not item.pending:  # every recipient settled already: only the bytes are left
            await self.store.finish(sid)
            return
        try:
            prepared = self.prepare(item)
        except SesError as exc:
            if exc.retryable:
                log.error("%s: cannot prepare the message, will retry: %s", sid, exc)
                await self._retry_or_fail(item, item.pending, str(exc))
                return
            await self._fail(item, item.pending, str(exc))
            return
        for chunk in chunks(item.pending):
            request = SendRequest(
                raw=prepared.raw,
                source=prepared.source,
                destinations=chunk,
                configuration_set=prepared.configuration_set,
                tags=prepared.tags,
                source_arn=prepared.arns.get("source_arn") or None,
                from_arn=prepared.arns.get("from_arn") or None,
                return_path_arn=prepared.arns.get("return_path_arn") or None,
            )
            try:
                async with self._slots:
                    await self.limiter.acquire(len(chunk))
                    started = time.monotonic()
                    message_id = await asyncio.to_thread(self.ses.send_raw, request)
            except SesError as exc:
                outcome = "failed" if exc.disposition is Disposition.PERMANENT else "retry"
                metrics.ses_call(outcome, time.monotonic() - started)
                if exc.disposition is Disposition.PERMANENT:
                    log.warning("%s: SES refused %d recipient(s): %s", sid, len(chunk), exc)
                    await self._fail(item, chunk, str(exc))
                    continue
                log.info("%s: SES call failed, will retry: %s", sid, exc)
                remaining = item.pending[item.pending.index(chunk[0]) :]
                await self._retry_or_fail(item, remaining, str(exc))
                return
            metrics.ses_call("sent", time.monotonic() - started)
            await self._record_sent(sid, chunk, message_id)
            log.info("%s: sent to %d recipient(s) as %s", sid, len(chunk), message_id)

    async def _record_sent(self, sid: str, chunk: tuple[str, ...], message_id: str) -> None:
        """SES has the message: try hard to write that down, or the chunk will be sent twice."""
        for attempt in range(1, STORE_RETRIES + 1):
            try:
                await self.store.record_outcome(
                    sid, chunk, Status.SENT, now=utcnow(), ses_message_id=message_id
                )
                return
            except StoreError as exc:
                if attempt == STORE_RETRIES:
                    log.error("%s: sent as %s but cannot record it; it may be sent again: %s",
                              sid, message_id, exc)  # fmt: skip
                    raise
                await asyncio.sleep(STORE_RETRY_PAUSE * attempt)

    async def _retry_or_fail(self, item: SpoolItem, remaining: tuple[str, ...], error: str) -> None:
        sid = item.submission.id
        now = self.clock()
        age = now - item.spooled_at
        if age >= self.config.ses.retry_max_age.total_seconds():
            detail = f"gave up after {age / 3600:.1f} h of retries; last error: {error}"
            await self._fail(item, remaining, detail)
            log.warning("%s: %s", sid, detail)
            return
        delay = backoff_delay(item.attempts, cap=self.config.ses.retry_cap.total_seconds())
        await self.store.defer(sid, next_attempt_at=now + delay, error=error)

    async def _fail(self, item: SpoolItem, addresses: tuple[str, ...], detail: str) -> None:
        """Mark recipients failed and owe their sender a notice saying why (never to a null sender)."""
        sub = item.submission
        now = utcnow()
        notices = [
            NoticeRecord(
                dedupe_key=f"{sub.id}:{address}:{NoticeReason.SEND_FAILED}",
                reason=NoticeReason.SEND_FAILED,
                recipient=address,
                sender=sub.mail_from,
                submission_id=sub.id,
                klass=sub.klass,
                status="5.0.0",
                diagnostic=detail,
            )
            for address in addresses
            if sub.mail_from
        ]
        await self.store.record_outcome(
            sub.id, addresses, Status.FAILED, now=now, detail=detail, notices=notices
        )

    def prepare(self, item: SpoolItem) -> Prepared:
        """Strip what must not leave, sign what should; pure apart from reading DKIM keys."""
        sub = item.submission
        raw = hdr.remove(item.data)
        source = source_address(item)
        if self.dkim is not None and self.dkim.has_keys:  # else no From to read at all
            header_address = from_address(sub.header_from)
            domain = domain_of(header_address) if header_address else domain_of(source)
            key = self.dkim.for_domain(domain)
            if key is not None:
                selector, pem = key
                try:
                    raw = sign(raw, domain, selector, pem)
                except DkimError as exc:
                    # A configured key that cannot sign is the operator's to fix: keep the
                    # message and retry rather than send it unsigned or fail it.
                    raise SesError("DkimError", str(exc), Disposition.RETRY) from exc
        tags = ((Tag.MESSAGE_CLASS, sub.klass), (Tag.SUBMISSION_ID, sub.id), *sub.tags)
        ses = self.config.ses
        arns = {"source_arn": ses.source_arn, "from_arn": ses.from_arn}
        arns["return_path_arn"] = ses.return_path_arn
        arns.update(spooled_arns(item.data))  # a permitted user's own headers win over the config
        return Prepared(raw=raw, source=source, configuration_set=sub.configuration_set, tags=tags, arns=arns)


def spooled_arns(data: bytes) -> dict[str, str]:
    """X-SES-*-ARN headers left in a spooled message: the intake strips them unless the
    authenticated user may set them, so any still here are the user's to use."""
    block, _ = hdr.split(data)
    if b"x-ses-" not in block.lower():  # nearly every message: no header parse at all
        return {}
    msg = hdr.parse_raw(data)
    found = {}
    for header, key in (("X-SES-SOURCE-ARN", "source_arn"), ("X-SES-FROM-ARN", "from_arn"),
                        ("X-SES-RETURN-PATH-ARN", "return_path_arn")):  # fmt: skip
        value = hdr.first(msg, header)
        if value:
            found[key] = value
    return found
