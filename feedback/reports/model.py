"""The report's data: rows, summary per class, counts per hour, and where the rates stand.

Pure functions of the store's records: `build` turns the window's events and send
counts into a `Report`, which every writer (text, JSON, CSV, XLSX, HTML) renders,
so the formats can never disagree about what happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from relay.ops.stats import SES_PAUSE, SES_REVIEW, UNKNOWN_CLASS, Counts, share_of_sent, summarise
from relay.store import EventRecord
from relay.timeutil import to_text

COLUMNS = (
    "time", "recipient", "type", "subtype", "diagnostic", "subject", "message_id", "class",
    "from_address", "source_ip",
)  # fmt: skip
ALL_CLASSES = "all"
REVIEW_BOUNCE_RATE = SES_REVIEW["bounce_rate"]  # 5 %: SES reviews the account
REVIEW_COMPLAINT_RATE = SES_REVIEW["complaint_rate"]  # 0.1 %
PAUSE_BOUNCE_RATE = SES_PAUSE["bounce_rate"]  # 10 %: SES may pause sending
PAUSE_COMPLAINT_RATE = SES_PAUSE["complaint_rate"]  # 0.5 %


@dataclass(frozen=True)
class Row:
    """One bounced or complaining recipient, in the report's columns."""

    time: datetime
    recipient: str
    type: str  # "Permanent", "Transient", "Undetermined" (bounces) or "Complaint"
    subtype: str  # SES's bounce subtype, or the complaint's feedback type
    diagnostic: str
    subject: str
    message_id: str  # SES's message id
    klass: str
    from_address: str
    source_ip: str

    @property
    def is_complaint(self) -> bool:
        return self.type == "Complaint"

    def values(self) -> tuple[str, ...]:
        """The cells in COLUMNS order, time as ISO-8601 UTC text."""
        return (
            to_text(self.time), self.recipient, self.type, self.subtype, self.diagnostic, self.subject,
            self.message_id, self.klass, self.from_address, self.source_ip,
        )  # fmt: skip


@dataclass(frozen=True)
class SummaryLine:
    scope: str  # a class name, or ALL_CLASSES
    sent: int
    permanent: int
    transient: int
    undetermined: int
    complaints: int

    @property
    def bounces(self) -> int:
        return self.permanent + self.transient + self.undetermined

    @property
    def bounce_rate(self) -> float:
        """Permanent bounces per recipient sent, as SES's reputation metric counts them."""
        return share_of_sent(self.permanent, self.sent)

    @property
    def complaint_rate(self) -> float:
        return share_of_sent(self.complaints, self.sent)


class Hour(NamedTuple):
    """One UTC hour of the chart; `permanent` is the part of `bounces` that SES's rate counts."""

    start: datetime
    bounces: int
    complaints: int
    permanent: int = 0


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    rows: tuple[Row, ...]
    summary: tuple[SummaryLine, ...]  # overall first, then per class
    hourly: tuple[Hour, ...] = field(default=())

    @property
    def overall(self) -> SummaryLine:
        return self.summary[0]


def row_of(event: EventRecord) -> Row:
    if event.kind == "complaint":
        kind, subtype = "Complaint", event.complaint_type or ""
    else:
        kind, subtype = event.bounce_type or "Undetermined", event.bounce_subtype or ""
    return Row(
        time=event.occurred_at,
        recipient=event.recipient or "",
        type=kind,
        subtype=subtype,
        diagnostic=event.diagnostic or "",
        subject=event.subject or "",
        message_id=event.ses_message_id,
        klass=event.klass or UNKNOWN_CLASS,
        from_address=event.from_address or "",
        source_ip=event.source_ip or "",
    )


def _line(scope: str, sent: int, rows: Iterable[Row]) -> SummaryLine:
    counts = {"Permanent": 0, "Transient": 0, "Undetermined": 0, "Complaint": 0}
    for row in rows:
        counts[row.type if row.type in counts else "Undetermined"] += 1
    return SummaryLine(
        scope, sent, counts["Permanent"], counts["Transient"], counts["Undetermined"], counts["Complaint"]
    )


def hour_floor(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def hourly(rows: Iterable[Row], since: datetime, until: datetime) -> tuple[Hour, ...]:
    """Bounces and complaints per UTC hour, every hour of the window present (zeros included)."""
    buckets: dict[datetime, list[int]] = {}
    hour = hour_floor(since)
    while hour < until:
        buckets[hour] = [0, 0, 0]
        hour += timedelta(hours=1)
    for row in rows:
        bucket = buckets.get(hour_floor(row.time))
        if bucket is None:
            continue
        bucket[1 if row.is_complaint else 0] += 1
        if row.type == "Permanent":
            bucket[2] += 1
    return tuple(Hour(h, b, c, p) for h, (b, c, p) in buckets.items())


def build(
    events: Iterable[EventRecord],
    *,
    since: datetime,
    until: datetime,
    sent: Sequence[tuple[str | None, str, int]] = (),
) -> Report:
    """The report of `events` (bounces and complaints) in [since, until).

    `sent` is the store's outcome_counts for the window, for the rates; only its
    "sent" measures are used, so counts in the report always match its rows.
    """
    rows = tuple(row_of(e) for e in events if e.kind in ("bounce", "complaint"))
    overall, per_class = summarise(r for r in sent if r[1] == "sent")
    classes = sorted({r.klass for r in rows} | set(per_class))
    summary = [_line(ALL_CLASSES, overall.sent, rows)]
    for klass in classes:
        count = per_class.get(klass, Counts()).sent
        summary.append(_line(klass, count, (r for r in rows if r.klass == klass)))
    return Report(since, until, rows, tuple(summary), hourly(rows, since, until))


# -- against SES's review lines -----------------------------------------------------------


def percent(value: float) -> str:
    """A threshold as people say it: 0.05 -> "5%", 0.001 -> "0.1%"."""
    return f"{value * 100:.3f}".rstrip("0").rstrip(".") + "%"


def rate_text(value: float) -> str:
    return f"{value:.2%}"


def against(rate: float, review: float, pause: float) -> tuple[str, str]:
    """(level, words) for one rate: "ok", "review" or "pause", and how far it is from the line."""
    if rate >= pause:
        return "pause", f"over SES's {percent(pause)} pause line"
    if rate >= review:
        return "review", f"over the {percent(review)} review line ({rate / review:.1f} times it)"
    return "ok", f"{rate / review:.0%} of the {percent(review)} review line"


@dataclass(frozen=True)
class Standing:
    """Where one class's rates stand against SES's review (and pause) lines."""

    scope: str
    sent: int
    level: str  # "ok", "review", "pause", or "no sends" when there is no rate to judge
    bounce: str  # e.g. "1.20%: 24% of the 5% review line"
    complaint: str

    def sentence(self) -> str:
        if self.level == "no sends":
            return f"{self.scope}: no sends counted in the window, so no rate to set against SES's lines"
        return f"{self.scope}: {self.level} (bounce rate {self.bounce}; complaint rate {self.complaint})"


def standing(line: SummaryLine) -> Standing:
    if not line.sent:
        return Standing(line.scope, 0, "no sends", "", "")
    b_level, b_words = against(line.bounce_rate, REVIEW_BOUNCE_RATE, PAUSE_BOUNCE_RATE)
    c_level, c_words = against(line.complaint_rate, REVIEW_COMPLAINT_RATE, PAUSE_COMPLAINT_RATE)
    order = ("ok", "review", "pause")
    level = max(b_level, c_level, key=order.index)
    return Standing(
        line.scope, line.sent, level,
        f"{rate_text(line.bounce_rate)}: {b_words}", f"{line.complaint_rate:.3%}: {c_words}",
    )  # fmt: skip


def standings(report: Report) -> tuple[Standing, ...]:
    return tuple(standing(line) for line in report.summary)


def review_lines(report: Report) -> tuple[float, float] | None:
    """(bounces, complaints) per hour at SES's review rates, for the window's average hour.

    SES judges a rate over a representative volume rather than hour by hour, so the
    chart's lines are the review rates applied to the window's sends spread evenly:
    a bar above its line is an hour that, kept up all window, would reach the line.
    None when nothing was sent: with no sends there is no rate.
    """
    hours = (report.until - report.since).total_seconds() / 3600
    if not report.overall.sent or hours <= 0:
        return None
    per_hour = report.overall.sent / hours
    return per_hour * REVIEW_BOUNCE_RATE, per_hour * REVIEW_COMPLAINT_RATE
