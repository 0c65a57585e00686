"""The suppression policy (pure): one function from an event and what we know of the
recipient to the actions the consumer must take, in one transaction.

Every row of the suppression policy table (README) is a branch of `decide`; the numbers
come from `PolicyConfig`. The function never reads the store or the clock: the caller
passes the recipient's transient-bounce history, so the same event always yields the
same decision, replays are reproducible, and each row is a table test. Every time in
a decision is the event's own (SES's timestamp), never the time it is applied: an
event decides the same whenever, and by whichever consumer, it is applied, and a
suppression it makes expires when it would have, had it been applied at once.

What `decide` returns is a proposal. A suppression must be combined with the entry on
file through `relay.suppression.merge`, which is where "levels never downgrade, expiries
only extend" is enforced; a status goes through `advance_status`, so it never moves
backwards (a Delivery arriving after a Bounce leaves the recipient bounced).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from feedback.diagnostics import sender_fault
from feedback.events import EventKind, FeedbackEvent
from relay.config import PolicyConfig
from relay.suppression import ALL, Cause, Level, Suppression
from relay.suppression_history import Cleared
from relay.vocabulary import NoticeReason, Status, advance_status

__all__ = [
    "Decision",
    "RecipientHistory",
    "decide",
    "needs_engagement",
]

# Suppression reasons end up in SMTP replies and CLI listings: one line, bounded.
REASON_LIMIT = 300


@dataclass(frozen=True)
class RecipientHistory:
    """What the caller knows about the recipient before this event.

    `transient_bounces` are the times (the events' own `timestamp`s) of the recipient's
    earlier transient and undetermined bounces, only those after the last manual clear,
    and not including the event being decided. `status` is the recipient's current
    delivery status for this message, if any. `last_engagement` is the time of the
    recipient's latest open or click; only bounces that may escalate need it
    (`needs_engagement`), so callers look it up for those alone. `clears` are the
    recipient's bounce entries an admin cleared (at least those within `reclear_window`
    before the event); only bounces read them.
    """

    transient_bounces: tuple[datetime, ...] = ()
    status: str | None = None
    last_engagement: datetime | None = None
    clears: tuple[Cleared, ...] = ()


@dataclass(frozen=True)
class Decision:
    status: str | None = None  # status the recipient has after this event (already advanced)
    suppression: Suppression | None = None  # to merge with the entry on file (relay.suppression.merge)
    review: str | None = None  # reason to put in the review queue
    notice: NoticeReason | None = None  # what the original sender is owed, or None
    counts_transient: bool = False  # record this event's timestamp in the transient history
    engagement: bool = False  # open / click
    reputation_hit: str | None = None  # class whose sending reputation this counts against


_HARD_FOREVER = frozenset({"noemail", "suppressed", "onaccountsuppressionlist"})
_MESSAGE_AT_FAULT = {
    "messagetoolarge": NoticeReason.MESSAGE_TOO_LARGE,
    "contentrejected": NoticeReason.MESSAGE_REJECTED_CONTENT,
    "attachmentrejected": NoticeReason.MESSAGE_REJECTED_CONTENT,
}
_SIMPLE_STATUS = {
    EventKind.SEND: Status.SENT,
    EventKind.DELIVERY: Status.DELIVERED,
    EventKind.DELIVERY_DELAY: Status.DELAYED,
}


def decide(
    event: FeedbackEvent,
    *,
    message_class: str | None,
    history: RecipientHistory,
    config: PolicyConfig,
) -> Decision:
    """Apply the suppression policy table to one event.

    `message_class` is the class of the submission the event belongs to (the caller
    resolves it from the submission, else the event's message-class tag); None means
    unknown, and then the event's own tag is tried before falling back to all classes.
    """
    klass = message_class or event.message_class
    kind = event.kind

    if kind in _SIMPLE_STATUS:
        return Decision(status=advance_status(history.status, _SIMPLE_STATUS[kind]))
    if kind is EventKind.REJECT:
        return Decision(status=advance_status(history.status, Status.REJECTED), notice=NoticeReason.REJECT)
    if kind is EventKind.RENDERING_FAILURE:
        return Decision(
            status=advance_status(history.status, Status.FAILED), notice=NoticeReason.RENDERING_FAILURE
        )
    if kind in (EventKind.OPEN, EventKind.CLICK):
        return Decision(engagement=True)
    if event.recipient is None:
        return Decision()  # UNKNOWN, or nobody to act on
    if kind is EventKind.BOUNCE:
        return _bounce(event, klass, history, config)
    if kind is EventKind.COMPLAINT:
        return Decision(
            status=advance_status(history.status, Status.COMPLAINED),
            suppression=_suppression(
                event, klass or ALL, Level.PERMANENT, Cause.COMPLAINT, _complaint_reason(event), None
            ),
        )
    if kind is EventKind.SUBSCRIPTION:
        if not event.unsubscribed:
            return Decision()  # an opt-in or a no-op preference change
        return Decision(
            suppression=_suppression(
                event, klass or ALL, Level.PERMANENT, Cause.UNSUBSCRIBE, _unsubscribe_reason(event), None
            )
        )
    return Decision()


def needs_engagement(event: FeedbackEvent) -> bool:
    """Whether `decide` reads `history.last_engagement` for this event: only bounces that
    count towards escalation (transient ones other than the message's fault, and
    undetermined ones) do, so the caller can skip the lookup for everything else."""
    if event.kind is not EventKind.BOUNCE or event.recipient is None:
        return False
    bounce_type = (event.bounce_type or "").strip().lower()
    subtype = (event.bounce_subtype or "").strip().lower()
    return bounce_type != "permanent" and not (bounce_type == "transient" and subtype in _MESSAGE_AT_FAULT)


def _bounce(
    event: FeedbackEvent, klass: str | None, history: RecipientHistory, config: PolicyConfig
) -> Decision:
    status = advance_status(history.status, Status.BOUNCED)
    bounce_type = (event.bounce_type or "").strip().lower()
    subtype = (event.bounce_subtype or "").strip().lower()
    reason = _bounce_reason(event)

    if bounce_type == "permanent":
        fault = sender_fault(event.diagnostic_code, event.status)
        if fault is not None:
            # The mailbox is fine; suppressing it would hide a problem only the sender can fix.
            return Decision(
                status=status,
                review=_clip(f"sender at fault ({fault}) in class {klass or ALL}: {reason}"),
                notice=NoticeReason.SENDER_AT_FAULT,
                reputation_hit=klass or ALL,
            )
        forever = subtype in _HARD_FOREVER
        lasts = None if forever else config.permanent_general_expiry
        return Decision(
            status=status,
            suppression=_mailbox(event, Level.HARD, reason, lasts, history, config),
            notice=NoticeReason.PERMANENT_BOUNCE,
        )

    if bounce_type == "transient" and subtype in _MESSAGE_AT_FAULT:
        # The message is at fault, not the mailbox: nothing to suppress or count.
        return Decision(status=status, notice=_MESSAGE_AT_FAULT[subtype])

    # Transient/General, /MailboxFull (and transient subtypes SES may add), and
    # Undetermined (or a bounce type we do not know), which counts as transient.
    count = _transient_count(event, history, config)
    undetermined = bounce_type != "transient"
    review = _clip(f"undetermined bounce: {reason}") if undetermined else None
    engaged = _engaged(event, history, config)
    if count >= (config.escalate_after_engaged if engaged else config.escalate_after):
        window = _duration(config.escalate_window)
        who = " to a recipient who opened or clicked recently" if engaged else ""
        escalated = _clip(f"{count} transient bounces within {window}{who}; last {reason}")
        return Decision(
            status=status,
            suppression=_mailbox(event, Level.HARD, escalated, config.escalate_expiry, history, config),
            review=review,
            notice=NoticeReason.SOFT_BOUNCE_ESCALATED,
            counts_transient=True,
        )
    if undetermined:
        return Decision(status=status, review=review, counts_transient=True)
    return Decision(
        status=status,
        suppression=_mailbox(event, Level.SOFT, reason, config.soft_bounce_expiry, history, config),
        counts_transient=True,
    )


def _transient_count(event: FeedbackEvent, history: RecipientHistory, config: PolicyConfig) -> int:
    """Transient bounces within the window ending at this event, counting this one.

    The window is anchored on the events' own times, not on when they are applied, so
    a backlog processed late (or a replay) escalates exactly as it would have live.
    """
    end = event.timestamp
    start = end - config.escalate_window
    return 1 + sum(1 for t in history.transient_bounces if start < t <= end)


def _engaged(event: FeedbackEvent, history: RecipientHistory, config: PolicyConfig) -> bool:
    """Whether the recipient opened or clicked within `engaged_window` before this bounce.

    A full mailbox of someone who reads the mail is a passing state, not a dead address,
    so an engaged recipient needs `escalate_after_engaged` transient bounces to escalate.
    Anchored on the event's own time, as the escalation window is; an engagement after
    the bounce counts too (the reader is plainly alive).
    """
    last = history.last_engagement
    return last is not None and last >= event.timestamp - config.engaged_window


def _mailbox(
    event: FeedbackEvent,
    level: Level,
    reason: str,
    lasts: timedelta | None,
    history: RecipientHistory,
    config: PolicyConfig,
) -> Suppression:
    """The all-class suppression a bounce of the mailbox makes, weighed against recent clears.

    An address that bounces again within `reclear_window` of an admin's clear of its
    bounce entry was cleared too soon: it is suppressed for twice the cleared entry's
    window (when that is longer than this bounce's own), at the cleared level at least,
    and its reason (hence its history) says so. A cleared entry that never expired
    makes one that never expires.
    """
    clear = _recent_clear(event, history, config)
    if clear is not None:
        note = f"bounced again {_span(event.timestamp - clear.at)} after a clear"
        if clear.window is None:
            if lasts is not None:
                note += " of an entry that never expired: until cleared"
            lasts = None
        elif lasts is not None and 2 * clear.window > lasts:
            lasts = 2 * clear.window
            note += f": twice the cleared entry's {_span(clear.window)}"
        level = max(level, clear.level)
        reason = f"{note}; {reason}"
    return _suppression(event, ALL, level, Cause.BOUNCE, reason, lasts)


def _recent_clear(event: FeedbackEvent, history: RecipientHistory, config: PolicyConfig) -> Cleared | None:
    """The latest clear within `reclear_window` before the bounce (anchored on the event's
    own time, so a bounce that happened before the clear but arrives after it does not
    count); when it cleared several entries, their highest level and longest window."""
    end = event.timestamp
    recent = [c for c in history.clears if c.at < end <= c.at + config.reclear_window]
    if not recent:
        return None
    latest = max(c.at for c in recent)
    those = [c for c in recent if c.at == latest]
    windows = [c.window for c in those]
    window = None if None in windows else max(w for w in windows if w is not None)
    return Cleared(latest, max(c.level for c in those), window)


def _suppression(
    event: FeedbackEvent,
    klass: str,
    level: Level,
    cause: Cause,
    reason: str,
    lasts: timedelta | None,
) -> Suppression:
    """The entry an event asks for, dated by the event: it was raised, and runs, from then."""
    assert event.recipient is not None  # decide() checks before any suppressing branch
    at = event.timestamp
    return Suppression(
        address=event.recipient,
        klass=klass,
        level=level,
        cause=cause,
        reason=_clip(reason),
        created_at=at,
        updated_at=at,
        expires_at=None if lasts is None else at + lasts,
        feedback_id=event.feedback_id,
        ses_message_id=event.ses_message_id,
    )


def _bounce_reason(event: FeedbackEvent) -> str:
    label = event.bounce_type or "Bounce"
    if event.bounce_subtype:
        label = f"{label}/{event.bounce_subtype}"
    return f"{label}: {event.diagnostic_code}" if event.diagnostic_code else label


def _complaint_reason(event: FeedbackEvent) -> str:
    """The reason text after the cause: listings and replies show "complaint: abuse"."""
    details = [d for d in (event.complaint_feedback_type, event.complaint_subtype) if d]
    return ", ".join(details) if details else "unspecified"


def _unsubscribe_reason(event: FeedbackEvent) -> str:
    topics = event.unsubscribed_topics
    plural = "s" if len(topics) > 1 else ""
    what = "all topics" if event.unsubscribe_all else f"topic{plural} {', '.join(topics)}"
    where = f" of contact list {event.contact_list}" if event.contact_list else ""
    how = f" via {event.subscription_source}" if event.subscription_source else ""
    return f"unsubscribed from {what}{where}{how}"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _span(delta: timedelta) -> str:
    """A duration in its two largest units: 30d, 1d 2h, 45m, 10s."""
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (size == 1 and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def _clip(text: str) -> str:
    """One printable line of bounded length: remote diagnostics are multi-line and
    untrusted, and reasons are echoed in SMTP replies."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 3] + "..."
