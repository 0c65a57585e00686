"""The reputation guard: pause a class whose bounce or complaint rate runs too high.

SES judges the whole account; one bad list can get transactional mail paused with
it. The guard watches each class's rates over a rolling window (with a minimum
volume and a minimum count of bounces or complaints, so a few hundred sends and one
complaint do not trip it) and pauses the class before SES would review the account.
A paused class's new mail gets `451 4.7.1` (or is accepted and held in the spool,
`[guard] action = "hold"`), the admins get an alert, and only a person resumes it
(`ses-relay class resume CLASS`). Resuming restarts that class's window, so the old
bounces do not pause it again at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from relay.config import Config, GuardConfig
from relay.intake.pickup import spool_message
from relay.loop import Loop
from relay.ops import services
from relay.ops.stats import Counts, summarise
from relay.store import ClassState, Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.guard")

ACTOR = "guard"


def verdict(counts: Counts, cfg: GuardConfig) -> str | None:
    """Why this class must pause, or None. Pure: the whole rule is here."""
    if counts.sent < cfg.min_volume:
        return None
    if counts.bounced_permanent >= cfg.min_bounces and counts.bounce_rate >= cfg.bounce_rate:
        return (
            f"bounce rate {counts.bounce_rate:.2%} >= {cfg.bounce_rate:.2%} "
            f"({counts.bounced_permanent} permanent bounces / {counts.sent} sent)"
        )
    if counts.complained >= cfg.min_complaints and counts.complaint_rate >= cfg.complaint_rate:
        return (
            f"complaint rate {counts.complaint_rate:.3%} >= {cfg.complaint_rate:.3%} "
            f"({counts.complained} complaints / {counts.sent} sent)"
        )
    return None


def paused_by(actor: str) -> str:
    """Who paused a class, in replies and listings: the guard, or the person the audit names."""
    return "the reputation guard" if actor == ACTOR else actor


def unalerted(config: Config) -> str | None:
    """The warning for a guard that would pause classes without telling anyone, or None."""
    if not config.guard.enabled or config.guard.alert_to:
        return None
    return (
        "[guard] alert_to is not set: when the reputation guard pauses a class, nobody is mailed "
        "(the pause is logged and shown by `ses-relay class status`)"
    )


def alert_message(klass: str, reason: str, *, sender: str, to: tuple[str, ...], now: datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"ses-relay: class {klass} paused ({reason.split(' (')[0]})"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"The reputation guard paused the message class {klass!r} at {now:%Y-%m-%d %H:%M:%S} UTC:\n\n"
        f"    {reason}\n\n"
        "New mail of this class is refused with 451 4.7.1 (or held in the spool) until a person\n"
        "resumes it. Find the cause first (`ses-relay report --since 24h`, `ses-relay stats`),\n"
        f"then run:\n\n    ses-relay class resume {klass}\n\n"
        "Other classes keep flowing. SES reviews an account at a 5% bounce or 0.1% complaint rate.\n"
    )
    return bytes(msg)


class ClassGuard(Loop):
    """The class pause states, re-read every round (the service table's interval): in
    serve a cached view the intake reads per DATA; in the worker (`checks`) also the
    judge of the rates."""

    def __init__(self, store: Store, config: Config, *, alert_sender: str, checks: bool = True) -> None:
        super().__init__()
        self.store = store
        self.config = config
        self.alert_sender = alert_sender
        self.checks = checks
        self.every = services.every("guard" if checks else "guard-view")
        self._states: dict[str, ClassState] = {}
        self._next_check = float("-inf")  # event-loop time of the next rate check

    def paused(self, klass: str) -> ClassState | None:
        state = self._states.get(klass)
        return state if state is not None and state.paused else None

    async def refresh(self) -> None:
        # serve's view answers the intake from this host's copy (a shared state's mirror)
        self._states = await self.store.class_states(mirror=not self.checks)

    async def check(self, now: datetime) -> list[str]:
        """Pause every class over its threshold; return the classes paused now."""
        cfg = self.config.guard
        await self.refresh()
        starts: dict[datetime, list[str]] = {}
        for klass in self.config.classes:
            state = self._states.get(klass)
            if state is not None and state.paused:
                continue
            start = now - cfg.window
            if state is not None and state.changed_at > start:
                start = state.changed_at  # resumed within the window: count from then
            starts.setdefault(start, []).append(klass)
        newly: list[str] = []
        for start, classes in starts.items():
            _overall, per_class = summarise(await self.store.outcome_counts(start))
            for klass in classes:
                reason = verdict(per_class.get(klass, Counts()), cfg)
                if reason is None:
                    continue
                await self.store.set_class_paused(klass, True, reason=reason, actor=ACTOR, now=now)
                log.error("paused class %s: %s", klass, reason)
                newly.append(klass)
                await self._alert(klass, reason, now)
        if newly:
            await self.refresh()
        return newly

    async def _alert(self, klass: str, reason: str, now: datetime) -> None:
        to = self.config.guard.alert_to
        if not to:
            log.warning("no [guard] alert_to configured: nobody was told that %s is paused", klass)
            return
        open_classes = [c for c in self.config.classes if c != klass and not self.paused(c)]
        via = self.config.default_class if self.config.default_class in open_classes else None
        via = via or (open_classes[0] if open_classes else self.config.default_class)
        raw = alert_message(klass, reason, sender=self.alert_sender, to=to, now=now)
        await spool_message(self.store, self.config, raw, self.alert_sender, to, origin="alert", klass=via)

    async def tick(self) -> float:
        loop = asyncio.get_running_loop()
        try:
            if self.checks and self.config.guard.enabled and loop.time() >= self._next_check:
                await self.check(utcnow())
                self._next_check = loop.time() + self.config.guard.check_every.total_seconds()
            else:
                await self.refresh()
        except StoreError as exc:
            log.error("guard cannot read the store: %s", exc)
        return self.every
