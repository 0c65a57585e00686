"""Sending statistics and reputation thresholds (pure): what SES would think of us.

SES reviews an account whose bounce rate reaches 5 % or complaint rate 0.1 %, and
may pause it at 10 % / 0.5 %. The bounce rate counts permanent bounces only, as
SES's reputation metric does; both rates are fractions of recipients sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

SES_REVIEW = {"bounce_rate": 0.05, "complaint_rate": 0.001}
SES_PAUSE = {"bounce_rate": 0.10, "complaint_rate": 0.005}
UNKNOWN_CLASS = "unknown"


def share_of_sent(count: int, sent: int) -> float:
    """`count` as a fraction of the recipients sent, the way SES states its rates; 0.0
    while nothing was sent, so a quiet class never looks alarming."""
    return count / sent if sent else 0.0


@dataclass
class Counts:
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    bounced_permanent: int = 0
    bounced_transient: int = 0
    complained: int = 0
    rejected: int = 0

    @property
    def bounce_rate(self) -> float:
        return share_of_sent(self.bounced_permanent, self.sent)

    @property
    def complaint_rate(self) -> float:
        return share_of_sent(self.complained, self.sent)

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "bounce_rate": self.bounce_rate, "complaint_rate": self.complaint_rate}

    def add(self, measure: str, n: int) -> None:
        if measure.startswith("bounced_"):
            self.bounced += n
            if measure == "bounced_permanent":
                self.bounced_permanent += n
            elif measure == "bounced_transient":
                self.bounced_transient += n
        elif hasattr(self, measure):
            setattr(self, measure, getattr(self, measure) + n)


def summarise(rows: Iterable[tuple[str | None, str, int]]) -> tuple[Counts, dict[str, Counts]]:
    """Fold the store's (class, measure, count) rows into overall and per-class counts."""
    overall = Counts()
    classes: dict[str, Counts] = {}
    for klass, measure, n in rows:
        overall.add(measure, n)
        classes.setdefault(klass or UNKNOWN_CLASS, Counts()).add(measure, n)
    return overall, dict(sorted(classes.items()))


def standing(counts: Counts) -> str:
    """"ok", "review" or "pause": where these rates would put an SES account."""
    for name, limits in (("pause", SES_PAUSE), ("review", SES_REVIEW)):
        if counts.bounce_rate >= limits["bounce_rate"] or counts.complaint_rate >= limits["complaint_rate"]:
            return name
    return "ok"
