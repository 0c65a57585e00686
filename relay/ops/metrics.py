"""Prometheus metrics: one dedicated registry, tiny recording calls, gauges read at scrape time.

Counters are bumped where things happen (intake, sender, feedback apply) through the
module-level functions below, so those modules carry one short line each and never
touch prometheus_client. The registry is our own rather than the library's global
one: nothing another library registers leaks into /metrics, and tests can build a
fresh `Metrics` without colliding names.

Gauges that describe the store (spool depth and age, suppressions, paused classes)
are not kept up to date by the writers: `refresh` reads them from the store just
before a scrape, so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from relay.suppression import ALL, Cause, Level, Suppression

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# Gauges are set by the scraping process from the store: in multiprocess mode the
# most recent value wins (not one series per process).
_GAUGE_MODE = {"multiprocess_mode": "mostrecent"} if MULTIPROCESS_DIR else {}

# Recipient refusal reasons (the `reason` label of ses_relay_recipients_refused_total).
# As the SMTP reply tells them apart: a bounce is about the mailbox (5.1.1), any other
# cause (complaint, unsubscribe, admin, import) is policy (5.7.1).
SUPPRESSED_BOUNCE = "suppressed_bounce"  # all-class suppression from a bounce
SUPPRESSED_POLICY = "suppressed_policy"  # all-class suppression for any other cause
SUPPRESSED_CLASS = "suppressed_class"  # suppressed for the message's class only (DATA time)
MALFORMED = "malformed"  # not a usable address
TOO_MANY = "too_many"  # over limits.recipients
CLASS_PAUSED = "class_paused"  # the reputation guard paused the message's class
STORE_UNAVAILABLE = "store_unavailable"  # 451: the store could not be read

SES_OUTCOMES = ("sent", "retry", "failed")
# SES answers in tens to hundreds of milliseconds; throttled retries take seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def refusal_reason(entry: Suppression) -> str:
    """The label for a recipient refused because of `entry`."""
    if entry.klass != ALL:
        return SUPPRESSED_CLASS
    return SUPPRESSED_BOUNCE if entry.cause is Cause.BOUNCE else SUPPRESSED_POLICY


@dataclass(frozen=True)
class SpoolSnapshot:
    depth: int
    oldest_age: float  # seconds; 0 with an empty spool


class Metrics:
    """Every series ses-relay exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "ses_relay_messages_accepted", "Messages accepted (250 after DATA), by class.",
            ["class"], registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "ses_relay_recipients_refused", "Recipients refused at RCPT or DATA, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.ses_calls = Counter(
            "ses_relay_ses_calls", "SES send calls, by outcome (sent, retry, failed).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.ses_latency = Histogram(
            "ses_relay_ses_latency_seconds", "Duration of SES send calls.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.spool_depth = Gauge("ses_relay_spool_depth", "Messages in the spool.", registry=r, **_GAUGE_MODE)
        self.spool_oldest_age = Gauge(
            "ses_relay_spool_oldest_age_seconds", "Age of the oldest spooled message (0 when empty).",
            registry=r, **_GAUGE_MODE,
        )  # fmt: skip
        self.feedback_events = Counter(
            "ses_relay_feedback_events", "SES events applied (duplicates excluded), by kind.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.suppressions = Gauge(
            "ses_relay_suppressions", "Active suppressions, by level.", ["level"], registry=r, **_GAUGE_MODE
        )
        self.class_paused = Gauge(
            "ses_relay_class_paused", "1 while the reputation guard holds the class paused.",
            ["class"], registry=r, **_GAUGE_MODE,
        )  # fmt: skip
        self.outbox_backlog = Gauge(
            "ses_relay_state_outbox_backlog",
            "Outbox rows committed locally and not yet shipped to the shared state (PostgreSQL).",
            registry=r, **_GAUGE_MODE,
        )  # fmt: skip
        self.outbox_oldest_age = Gauge(
            "ses_relay_state_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet shipped to the shared state (0 when none).",
            registry=r, **_GAUGE_MODE,
        )  # fmt: skip
        for outcome in SES_OUTCOMES:
            self.ses_calls.labels(outcome)  # present at 0 from the start, so rate() works at once
        for level in Level:
            self.suppressions.labels(str(level))
        self.mirror_age: Gauge | None = None  # made at the first value: only a shared state has a mirror
        self.last_ses_success: float | None = None  # wall-clock time of the last sent call

    def render(self) -> bytes:
        """The text exposition; with several processes (serve and its worker), of them all.

        serve sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client,
        so each process writes its values to files there and the scrape sums them.
        """
        if MULTIPROCESS_DIR:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def record_ses_call(self, outcome: str, seconds: float) -> None:
        self.ses_calls.labels(outcome).inc()
        self.ses_latency.observe(seconds)
        if outcome == "sent":
            self.last_ses_success = time.time()

    def set_spool(self, snapshot: SpoolSnapshot) -> None:
        self.spool_depth.set(snapshot.depth)
        self.spool_oldest_age.set(snapshot.oldest_age)

    def set_outbox(self, backlog: SpoolSnapshot) -> None:
        self.outbox_backlog.set(backlog.depth)
        self.outbox_oldest_age.set(backlog.oldest_age)

    def set_suppressions(self, counts: dict[Level, int]) -> None:
        for level in Level:
            self.suppressions.labels(str(level)).set(counts.get(level, 0))

    def set_mirror_age(self, seconds: float | None) -> None:
        """The state mirror's age; a mirror never synced yet counts as infinitely old."""
        if self.mirror_age is None:
            self.mirror_age = Gauge(
                "ses_relay_state_mirror_age_seconds",
                "Seconds since this host's mirror of the shared state last held all of it.",
                registry=self.registry, **_GAUGE_MODE,
            )  # fmt: skip
        self.mirror_age.set(float("inf") if seconds is None else seconds)

    def set_paused(self, classes: Iterable[str], paused: Iterable[str]) -> None:
        held = set(paused)
        for klass in classes:
            self.class_paused.labels(klass).set(1 if klass in held else 0)


def spool_snapshot(depth: int, oldest_epoch: float | None, now: float) -> SpoolSnapshot:
    return SpoolSnapshot(depth, max(0.0, now - oldest_epoch) if depth and oldest_epoch is not None else 0.0)


METRICS = Metrics()


# The recording calls used across the code base: one line at each site.


def accepted(klass: str) -> None:
    METRICS.accepted.labels(klass).inc()


def refused(reason: str, n: int = 1) -> None:
    if n > 0:
        METRICS.refused.labels(reason).inc(n)


def ses_call(outcome: str, seconds: float) -> None:
    METRICS.record_ses_call(outcome, seconds)


def feedback_events(kinds: dict[str, int]) -> None:
    for kind, n in kinds.items():
        METRICS.feedback_events.labels(kind).inc(n)
