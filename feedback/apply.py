"""Applying a batch of queue messages: parse, decide, and commit every effect together.

Record first, decide second: each event is logged under its dedupe key before the
policy acts on it, in the same transaction, so a redelivered message finds its
events already logged and changes nothing. A body that cannot be parsed is kept in
`dead_letters` with the error (and so may be deleted from the queue); a store
failure raises StoreError and the caller leaves the batch in the queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from feedback import reorder
from feedback.bodies import BodyKind, ParsedBody, parse_body
from feedback.events import EventKind, FeedbackEvent, ParseError
from feedback.notices.compose import suppression_note
from feedback.policy import Decision, decide
from relay.config import Config
from relay.store import EventRecord, FeedbackTx, NoticeRecord, RecipientContext, Store, UnmatchedEvent
from relay.suppression import Suppression
from relay.vocabulary import STATUS_RANK

log = logging.getLogger("ses_relay.feedback")

# How long an event that matched no recipient waits for the sender to record its SES
# message id. Normally that is a fraction of a second away; an event still unmatched
# after this long is about mail some other sender sent through the same topic.
UNMATCHED_KEEP = timedelta(days=7)


@dataclass(frozen=True)
class Incoming:
    """One queue message: its body and where it came from (for dead letters and logs)."""

    body: str
    source: str


@dataclass
class BatchResult:
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    confirmations: int = 0
    suppressions: int = 0
    notices: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    # What the batch has to say (level, message, args), said once it is committed: a
    # log line written inside the transaction could block (a full pipe, a stalled log
    # collector) while the batch holds its addresses' locks, stalling every other
    # consumer waiting on them; and a batch that rolls back said nothing.
    said: list[tuple[int, str, tuple[object, ...]]] = field(default_factory=list, compare=False, repr=False)

    def say(self, level: int, message: str, *args: object) -> None:
        self.said.append((level, message, args))

    def add(self, other: BatchResult) -> None:
        for name in ("events", "duplicates", "dead_letters", "confirmations", "suppressions", "notices"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, n in other.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n


Parsed = Sequence[tuple[Incoming, ParsedBody | ParseError]]  # each body with what it parsed to


def parse_all(
    batch: Sequence[Incoming], received: datetime | None = None
) -> list[tuple[Incoming, ParsedBody | ParseError]]:
    """Parse every body; `received` dates the events that carry no timestamp of their own."""
    out: list[tuple[Incoming, ParsedBody | ParseError]] = []
    for item in batch:
        try:
            out.append((item, parse_body(item.body, received=received)))
        except ParseError as exc:
            out.append((item, exc))
    return out


Count = Callable[[dict[str, int]], None]  # the events of each kind a committed batch applied


async def apply_batch(
    store: Store, batch: Sequence[Incoming], config: Config, now: datetime, *, count: Count | None = None
) -> BatchResult:
    """Apply every message of `batch` in one transaction; raise StoreError to leave it queued.

    Parsing happens here; the decisions and writes run as one plain function in the
    store's commit thread (Store.apply_feedback), one hand-off for the whole batch.
    `count` is told what a committed batch applied (a rolled-back one counts nothing):
    by default the Prometheus counters of the process.
    """
    return await apply_parsed_batch(store, parse_all(batch, now), config, now, count=count)


async def apply_parsed_batch(
    store: Store, parsed: Parsed, config: Config, now: datetime, *, count: Count | None = None
) -> BatchResult:
    """apply_batch for a batch parsed already (parse_all): a replay parses the next batch
    while the store applies this one."""
    result = await store.apply_feedback(lambda tx: apply_parsed(tx, parsed, config), now)
    for level, message, args in result.said:
        log.log(level, message, *args)
    result.said.clear()
    (count or count_in_metrics)(result.kinds)
    return result


def count_in_metrics(kinds: dict[str, int]) -> None:
    """ses_relay_feedback_events_total. prometheus-client is imported here, on first use, so that
    a process with no metrics to export (the Lambda handler) neither loads nor ships it."""
    from relay.ops import metrics

    metrics.feedback_events(kinds)


def apply_parsed(
    tx: FeedbackTx, parsed: Sequence[tuple[Incoming, ParsedBody | ParseError]], config: Config
) -> BatchResult:
    result = BatchResult()
    # Parsed first, locked next: every recipient of the batch at once, so that batches
    # applied by several hosts at the same time give the result of some serial order.
    tx.lock(recipients_of(parsed))
    tx.forget_unmatched(tx.now - UNMATCHED_KEEP)
    events = [
        e for _, outcome in parsed if isinstance(outcome, ParsedBody) and outcome.kind is BodyKind.EVENTS
        for e in outcome.events
    ]  # fmt: skip
    tx.prefetch((e.ses_message_id, e.recipient) for e in events if e.recipient is not None)
    # Record first (the whole batch in a statement or a few), decide second, in order.
    ids = iter(tx.record_events([_record(e, *_context(tx, e, config)) for e in events]))
    for item, outcome in parsed:
        if isinstance(outcome, ParseError):
            tx.dead_letter(item.source, item.body, str(outcome))
            result.dead_letters += 1
            result.say(logging.WARNING, "dead letter from %s: %s", item.source, outcome)
            continue
        if outcome.kind is not BodyKind.EVENTS:
            result.confirmations += 1
            result.say(
                logging.WARNING,
                "SNS %s for topic %s in %s; confirm it at %s (ses-relay setup-aws does this for you)",
                outcome.kind, outcome.topic_arn, item.source, outcome.subscribe_url,
            )  # fmt: skip
            continue
        if outcome.note:
            result.say(logging.INFO, "SES says: %s", outcome.note)
        for event in outcome.events:
            apply_event(tx, event, next(ids), config, result)
    return result


def _context(
    tx: FeedbackTx, event: FeedbackEvent, config: Config
) -> tuple[RecipientContext | None, str | None]:
    """The submission an event is about (if this relay sent it), and the event's class."""
    ctx = tx.recipient(event.ses_message_id, event.recipient) if event.recipient else None
    return ctx, ctx.klass if ctx else reorder.known_class(event.message_class, config)


def recipients_of(parsed: Sequence[tuple[Incoming, ParsedBody | ParseError]]) -> list[str]:
    """Every recipient the batch's events are about, each once."""
    found: dict[str, None] = {}
    for _, outcome in parsed:
        if isinstance(outcome, ParsedBody):
            found.update((e.recipient, None) for e in outcome.events if e.recipient is not None)
    return list(found)


def _verdict(event: FeedbackEvent, klass: str | None) -> dict[str, str | None]:
    """The SesVerdict fields of an event: its log row and the notice it owes both carry
    them, and must say the same. The diagnostic is SES's own words, whichever it gave."""
    return {
        "klass": klass,
        "status": event.status,
        "diagnostic": event.diagnostic_code or event.reject_reason or event.rendering_error,
        "bounce_type": event.bounce_type,
        "bounce_subtype": event.bounce_subtype,
    }


def _record(event: FeedbackEvent, ctx: RecipientContext | None, klass: str | None) -> EventRecord:
    return EventRecord(
        dedupe_key=event.dedupe_key,
        kind=str(event.kind),
        ses_type=event.ses_type,
        recipient=event.recipient,
        ses_message_id=event.ses_message_id,
        occurred_at=event.timestamp,
        raw=_payload(event),
        submission_id=ctx.submission_id if ctx else event.submission_id,
        **_verdict(event, klass),
        complaint_type=event.complaint_feedback_type,
        feedback_id=event.feedback_id,
        source_ip=event.source_ip,
        from_address=event.from_address,
        subject=event.subject,
        configuration_set=event.configuration_set,
    )


def _payload(event: FeedbackEvent) -> str:
    """The SES payload as the log keeps it: the text it came as, else encoded again."""
    if event.raw_json is not None:
        return event.raw_json
    return json.dumps(event.raw, separators=(",", ":"), default=str)


def _detail(event: FeedbackEvent) -> str | None:
    if event.kind is EventKind.BOUNCE:
        kind = "/".join(p for p in (event.bounce_type, event.bounce_subtype) if p)
        return f"{kind}: {event.diagnostic_code}" if event.diagnostic_code else kind
    if event.kind is EventKind.COMPLAINT:
        return f"complaint: {event.complaint_feedback_type or 'unspecified'}"
    if event.kind is EventKind.REJECT:
        return f"rejected by SES: {event.reject_reason or 'no reason given'}"
    if event.kind is EventKind.RENDERING_FAILURE:
        return f"rendering failed: {event.rendering_error or 'no detail'}"
    if event.kind is EventKind.DELIVERY:
        return event.smtp_response
    if event.kind is EventKind.DELIVERY_DELAY:
        return f"delayed: {event.delay_type or 'unspecified'}"
    return None


def apply_event(
    tx: FeedbackTx, event: FeedbackEvent, event_id: int | None, config: Config, result: BatchResult
) -> None:
    """Decide on a logged event (`event_id`: its row in the log, None for a duplicate) and
    carry the decision out."""
    if event_id is None:
        result.duplicates += 1
        return
    tx.reached(event_id)
    ctx, klass = _context(tx, event, config)  # the status as the batch's events so far left it
    result.events += 1
    result.kinds[str(event.kind)] = result.kinds.get(str(event.kind), 0) + 1
    if event.recipient is None:
        if event.kind is EventKind.UNKNOWN:
            result.say(
                logging.INFO, "logged SES event of unknown type %r (%s)", event.ses_type, event.ses_message_id
            )
        return

    address = event.recipient
    status = ctx.status if ctx and ctx.status in STATUS_RANK else None
    history = reorder.history(tx, event, address, status, config)
    if klass is None and event.message_class is not None:
        # decide() falls back on the event's tag; here the tag names no configured class,
        # and a suppression in a class that does not exist would block nothing: unknown, `*`.
        event = replace(event, message_class=None)
    decision = decide(event, message_class=klass, history=history, config=config.policy)
    merged = _carry_out(tx, event, ctx, klass, decision, event_id, result)
    _reaching_back(tx, decision, merged, config, result)
    if decision.counts_transient:
        # Later bounces that this one, arriving late, brings to the escalation count.
        for later in reorder.escalated_later(tx, event, address, config):
            _reaching_back(tx, later.decision, _again(tx, later, result), config, result)


def _reaching_back(
    tx: FeedbackTx, decision: Decision, merged: Suppression | None, config: Config, result: BatchResult
) -> None:
    """When a late event's suppression became the start of an entry that later ones
    were already in, join the earlier bounces whose windows now reach the entry."""
    new = decision.suppression
    if new is None or merged is None or merged.created_at != new.created_at:
        return  # it began nothing
    if merged.updated_at <= new.updated_at:
        return  # it was the latest: applied in order, the earlier ones were seen already
    done: set[int] = set()
    start = merged.created_at
    while True:
        reaching = [
            r for r in reorder.earlier_bounces(tx, merged, config)
            if r.event_id not in done and _reaches(r.decision.suppression, start)
        ]  # fmt: skip
        if not reaching:
            return
        for r in reaching:
            done.add(r.event_id)
            joined = _again(tx, r, result)
            if joined is not None and joined.created_at < start:
                start, merged = joined.created_at, joined


def _again(tx: FeedbackTx, r: reorder.Redecided, result: BatchResult) -> Suppression | None:
    return _carry_out(tx, r.event, r.ctx, r.klass, r.decision, r.event_id, result)


def _reaches(entry: Suppression | None, start: datetime) -> bool:
    return entry is not None and (entry.expires_at is None or entry.expires_at > start)


def _carry_out(
    tx: FeedbackTx,
    event: FeedbackEvent,
    ctx: RecipientContext | None,
    klass: str | None,
    decision: Decision,
    event_id: int,
    result: BatchResult,
) -> Suppression | None:
    """Everything `decision` asks for; the suppression entry as it is now, if it made one."""
    address = event.recipient
    assert address is not None
    if decision.counts_transient:
        tx.add_transient(address, event.timestamp)
    if ctx is not None and decision.status is not None and decision.status != ctx.status:
        tx.set_status(ctx.submission_id, address, decision.status, _detail(event))
    note = merged = None
    if decision.suppression is not None:
        merged = tx.merge_suppression(decision.suppression, event_id)
        note = suppression_note(merged.expires_at, now=tx.now, message_class=merged.klass)
        result.suppressions += 1
        result.say(
            logging.INFO, "suppressed %s in class %s (%s, %s)",
            address, merged.klass, merged.level, merged.reason,
        )  # fmt: skip
    if decision.review is not None:
        tx.add_review(
            decision.review, recipient=address, klass=klass, ses_message_id=event.ses_message_id,
            event_id=event_id,
        )  # fmt: skip
    if ctx is None and (decision.status is not None or decision.notice is not None):
        # No recipient has this SES message id yet: the sender may not have recorded
        # it. Keep what the event owes; record_outcome applies it when the id lands.
        tx.hold_unmatched(
            UnmatchedEvent(
                event_id=event_id,
                ses_message_id=event.ses_message_id,
                recipient=address,
                status=decision.status,
                detail=_detail(event),
                notice=str(decision.notice) if decision.notice is not None else None,
                notice_extra=note,
            )
        )
    if decision.notice is not None and ctx is not None and ctx.mail_from:
        added = tx.add_notice(
            NoticeRecord(
                dedupe_key=f"{ctx.submission_id}:{address}:{decision.notice}",
                reason=str(decision.notice),
                recipient=address,
                sender=ctx.mail_from,
                submission_id=ctx.submission_id,
                ses_message_id=event.ses_message_id,
                **_verdict(event, klass),
                extra=note,
            )
        )
        result.notices += int(added)
    return merged
