"""A realistic mix of SES events for a few hundred addresses, in the order they happened.

For replay tests of many consumers: SES event-publishing JSON (tests/support/sns_sqs.py)
for mail of every class, each event about its own message, no two at the same
millisecond. Most addresses only get deliveries (and now and then a delay); the rest
bounce in every way SES bounces (permanent of each subtype, the sender's fault, the
message's fault, transient ones now and then or in bursts that escalate, undetermined
ones) or complain, many of them more than once, and some switch from one to another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.sns_sqs import bounce, complaint, delivery, delivery_delay, ses_mail

START = datetime(2025, 5, 1, tzinfo=UTC)
SPAN = timedelta(days=10)
CLASSES = ("transactional", "list", "bulk")
DMARC = "smtp; 550 5.7.26 This message does not pass authentication checks (DMARC policy)"


Make = Callable[[dict[str, Any], datetime], dict[str, Any]]  # an event from its mail and time


@dataclass(frozen=True)
class Planned:
    at: datetime
    address: str
    make: Make


def _transients(rng: random.Random, count: int, *, burst: bool) -> list[timedelta]:
    """Offsets of transient bounces: spread over the span, or a burst within hours."""
    if burst:
        start = rng.uniform(0, SPAN.total_seconds() - 86400)
        return [timedelta(seconds=start + rng.uniform(0, 20 * 3600)) for _ in range(count)]
    return [timedelta(seconds=rng.uniform(0, SPAN.total_seconds())) for _ in range(count)]


def _anywhere(rng: random.Random) -> timedelta:
    return timedelta(seconds=rng.uniform(0, SPAN.total_seconds()))


def _plan(rng: random.Random, address: str, profile: str) -> list[Planned]:
    def at(offset: timedelta, make: Make) -> Planned:
        return Planned(START + offset, address, make)

    def soft(subtype: str) -> Make:
        return lambda mail, when: bounce(mail, [address], "Transient", subtype, at=when)

    def hard(subtype: str, diagnostic: str | None = None) -> Make:
        return lambda mail, when: bounce(
            mail, [address], "Permanent", subtype, at=when, diagnostic=diagnostic
        )

    planned = [at(_anywhere(rng), _delivered(address)) for _ in range(rng.randint(3, 12))]
    if rng.random() < 0.2:
        planned.append(at(_anywhere(rng), lambda mail, when: delivery_delay(mail, [address], at=when)))
    if profile == "flaky":
        burst = rng.random() < 0.6
        count = rng.randint(5, 9) if burst else rng.randint(1, 6)
        for t in _transients(rng, count, burst=burst):
            planned.append(at(t, soft(rng.choice(["General", "MailboxFull"]))))
        if rng.random() < 0.3:  # and again later
            planned += [at(t, soft("General")) for t in _transients(rng, rng.randint(2, 6), burst=True)]
    elif profile == "dead":
        subtype = rng.choice(["General", "General", "NoEmail", "Suppressed", "OnAccountSuppressionList"])
        planned += [at(_anywhere(rng), hard(subtype)) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:  # it was full first
            planned += [at(t, soft("MailboxFull")) for t in _transients(rng, rng.randint(1, 5), burst=True)]
    elif profile == "complainer":
        for _ in range(rng.randint(1, 3)):
            planned.append(at(_anywhere(rng), _complaint_in(address, rng.choice(CLASSES))))
        if rng.random() < 0.3:
            planned.append(at(_anywhere(rng), hard("General")))
    elif profile == "odd":

        def undetermined(mail: dict[str, Any], when: datetime) -> dict[str, Any]:
            return bounce(mail, [address], "Undetermined", "Undetermined", at=when)

        planned.append(at(_anywhere(rng), hard("General", DMARC)))  # the sender's fault: review only
        planned.append(at(_anywhere(rng), soft("MessageTooLarge")))  # the message's fault: nothing
        for t in _transients(rng, rng.randint(1, 6), burst=rng.random() < 0.5):
            planned.append(at(t, undetermined))
    return planned


def _complaint_in(address: str, klass: str) -> Make:
    """A complaint about a message of `klass` (its message-class tag): it suppresses that class."""

    def made(mail: dict[str, Any], when: datetime) -> dict[str, Any]:
        mail["tags"]["message-class"] = [klass]
        return complaint(mail, [address], at=when)

    return made


def event_mix(count: int = 10_000, addresses: int = 400, seed: int = 13) -> list[dict[str, Any]]:
    """`count` SES events about `addresses` addresses, oldest first, no two in one millisecond."""
    rng = random.Random(seed)
    profiles = ["good"] * 45 + ["flaky"] * 30 + ["dead"] * 10 + ["complainer"] * 9 + ["odd"] * 6
    planned: list[Planned] = []
    for i in range(addresses):
        planned += _plan(rng, _address(i), rng.choice(profiles))
    while len(planned) < count:  # more deliveries to reach the count
        address = _address(rng.randrange(addresses))
        planned.append(Planned(START + _anywhere(rng), address, _delivered(address)))
    chosen = sorted(rng.sample(planned, count), key=lambda p: p.at)
    events, last = [], -1
    for n, item in enumerate(chosen):
        last = max(round((item.at - START).total_seconds() * 1000), last + 1)
        when = START + timedelta(milliseconds=last)
        mail = ses_mail(
            f"0100mix{n:06d}",
            [item.address],
            klass=CLASSES[n % len(CLASSES)],
            sent_at=when - timedelta(seconds=3),
        )
        events.append(item.make(mail, when))
    return events


def _address(i: int) -> str:
    return f"user{i:04d}@example{i % 7}.org"


def _delivered(address: str) -> Callable[[dict[str, Any], datetime], dict[str, Any]]:
    return lambda mail, when: delivery(mail, [address], at=when)


def write_lines(path: Path, events: list[dict[str, Any]]) -> Path:
    """JSON Lines, as `ses-relay feedback replay` reads them."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
