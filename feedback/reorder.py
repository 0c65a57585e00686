"""Events out of order: what a late event changes about the decisions of others.

SES events reach the consumers in any order: several relays consume one queue, SQS
shuffles a little on its own, a backlog is replayed. The suppression table must be
what applying them in the order they happened gives (see README, "Many consumers"):
the policy dates everything by the events' own times, and `relay.suppression.combine`
merges entries whatever order they come in. Two decisions still depend on what came
*before* an event, and a late one changes that for others:

- escalation counts the transient bounces before each one: a late bounce may bring a
  later one (within the window) to the count, which would then have escalated;
- an entry begins where a run of overlapping suppressions begins: a late bounce whose
  window reaches back over the start of the entry on file joins it to earlier
  bounces whose windows reach *it*, which were history when they came.

These functions read the log (the events keep their SES payload) and decide those
events again, with what is known now; feedback/apply.py carries out the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from feedback.events import EventKind, FeedbackEvent, ParseError, loads, parse_ses
from feedback.policy import Decision, RecipientHistory, decide, needs_engagement
from relay.config import Config
from relay.store import FeedbackTx, RecipientContext
from relay.suppression import Suppression
from relay.vocabulary import NoticeReason

Logged = tuple[int, str, str, datetime]  # event id, dedupe key, SES payload, time


@dataclass(frozen=True)
class Redecided:
    """A logged event decided again: only its suppression is to be carried out now."""

    event_id: int
    event: FeedbackEvent
    ctx: RecipientContext | None
    klass: str | None
    decision: Decision


def history(
    tx: FeedbackTx, event: FeedbackEvent, address: str, status: str | None, config: Config
) -> RecipientHistory:
    """What the policy needs to know of the recipient before `event` (see RecipientHistory)."""
    # Only bounces read the transient history (the escalation rule) and the recent clears
    # (bounced again after a clear); skip the queries otherwise.
    is_bounce = event.kind is EventKind.BOUNCE
    since = event.timestamp - config.policy.escalate_window
    bounces = tx.transient_history(address, since) if is_bounce else ()
    cleared_since = event.timestamp - config.policy.reclear_window
    clears = tx.recent_clears(address, cleared_since) if is_bounce else ()
    # Only bounces that may escalate read the last open/click (engagement-aware escalation).
    engaged_at = tx.last_engagement(address) if needs_engagement(event) else None
    return RecipientHistory(
        transient_bounces=bounces, status=status, last_engagement=engaged_at, clears=clears
    )


def known_class(name: str | None, config: Config) -> str | None:
    return name if name is not None and name in config.classes else None


def redecide(tx: FeedbackTx, logged: Logged, address: str, config: Config) -> Redecided | None:
    """A logged event of `address` decided again, with the history known now; None when
    its payload no longer parses (it did when it was logged)."""
    event_id, key, raw, at = logged
    event = _parsed(key, raw, at)
    if event is None:
        return None
    ctx = tx.recipient(event.ses_message_id, address)
    klass = ctx.klass if ctx else known_class(event.message_class, config)
    if klass is None and event.message_class is not None:
        event = replace(event, message_class=None)  # a tag naming no configured class: unknown
    known = history(tx, event, address, None, config)
    before = list(known.transient_bounces)
    if event.timestamp in before:
        before.remove(event.timestamp)  # its own, recorded when it came: not "before" it
    known = replace(known, transient_bounces=tuple(before))
    decision = decide(event, message_class=klass, history=known, config=config.policy)
    # What it did to the recipient's status, the review queue and the transient history
    # was done when it came; what is left to carry out is its suppression (and notice).
    left = replace(decision, status=None, review=None, counts_transient=False)
    return Redecided(event_id, event, ctx, klass, left)


def escalated_later(tx: FeedbackTx, event: FeedbackEvent, address: str, config: Config) -> list[Redecided]:
    """The transient bounces logged already that happened after `event`, within the
    window, and escalate now that it is counted (with the notice an escalation owes)."""
    window = config.policy.escalate_window
    after, before = event.timestamp, event.timestamp + window
    later = tx.logged_events(address, ("bounce",), after, before, transient_only=True)
    found = [redecide(tx, logged, address, config) for logged in later]
    return [r for r in found if r is not None and r.decision.notice is NoticeReason.SOFT_BOUNCE_ESCALATED]


def reach(config: Config) -> timedelta:
    """How far back a bounce's window may reach: twice the longest a bounce suppresses
    for (an entry cleared and bounced again lasts twice its window)."""
    policy = config.policy
    return 2 * max(policy.permanent_general_expiry, policy.escalate_expiry, policy.soft_bounce_expiry)


def earlier_bounces(tx: FeedbackTx, entry: Suppression, config: Config) -> list[Redecided]:
    """The bounces of the entry's address before the entry began (within `reach`), decided
    again, that suppress in the entry's class; newest first."""
    logged = tx.logged_events(entry.address, ("bounce",), entry.created_at - reach(config), entry.created_at)
    found = []
    for item in reversed(logged):
        again = redecide(tx, item, entry.address, config)
        if again is not None and again.decision.suppression is not None:
            if again.decision.suppression.klass == entry.klass:  # its notice was owed when it came
                found.append(replace(again, decision=replace(again.decision, notice=None)))
    return found


def _parsed(key: str, raw: str, at: datetime) -> FeedbackEvent | None:
    """A logged event as the parser made it (from the SES payload kept with it)."""
    try:
        events = parse_ses(loads(raw), fallback_time=at)
    except (ParseError, ValueError):
        return None
    return next((e for e in events if e.dedupe_key == key), None)
