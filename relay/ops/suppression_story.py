"""The story of an address for `suppression show` (pure): its history, oldest first.

The stored rows (relay.suppression_history.HistoryRow) say what each change left; the
moments an entry's expiry passed are not written anywhere (nothing happens then), so
the story adds them where they fall: an `expired` step before the change that renewed
(or cleared) the entry, or at the end when it lapsed with nothing after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.suppression import ALL
from relay.suppression_history import Change, HistoryRow, Source
from relay.timeutil import maybe_text, to_text

EXPIRED = "expired"  # a step of the story that no row records: an entry's expiry passed

_WORDS = {
    Change.CREATED: "created",
    Change.RENEWED: "renewed (the entry had expired)",
    Change.RAISED: "raised",
    Change.EXTENDED: "extended",
    Change.RESTATED: "restated",
    Change.CLEARED: "cleared",
    Change.ON_FILE: "on file",
}


@dataclass(frozen=True)
class Step:
    """A row of the story: a stored change, or (`row.change` aside) the moment an entry expired."""

    at: datetime
    row: HistoryRow
    expired: bool = False

    @property
    def change(self) -> str:
        return EXPIRED if self.expired else str(self.row.change)


def story(rows: Sequence[HistoryRow], now: datetime) -> list[Step]:
    """The rows (oldest first), with a step wherever an entry's expiry passed before the next
    change of its class (or before `now`)."""
    lapses: list[Step] = []
    following: dict[str, HistoryRow] = {}
    for row in reversed(rows):
        after = following.get(row.klass)
        following[row.klass] = row
        if row.change is Change.CLEARED or row.expires_at is None:
            continue
        if row.expires_at <= (after.at if after is not None else now):
            lapses.append(Step(row.expires_at, row, expired=True))
    lapses.sort(key=lambda s: s.at)
    steps: list[Step] = []
    for row in rows:
        while lapses and lapses[0].at <= row.at:
            steps.append(lapses.pop(0))
        steps.append(Step(row.at, row))
    return steps + lapses


def _scope(klass: str) -> str:
    return "all classes" if klass == ALL else f"class {klass}"


def _entry(row: HistoryRow) -> str:
    expires = "never expires" if row.expires_at is None else f"expires {to_text(row.expires_at)}"
    return f"{row.level} {row.cause}, {expires}"


def _who(row: HistoryRow) -> str:
    if row.source is Source.EVENT:
        ids = [f"SES message {row.ses_message_id}"] if row.ses_message_id else []
        ids += [f"feedback {row.feedback_id}"] if row.feedback_id else []
        event = f"SES event #{row.event_id}" if row.event_id is not None else "an SES event"
        return f"{event} ({', '.join(ids)})" if ids else event
    how = {Source.IMPORT: " (import)", Source.SES_LIST: " (SES's account-level list)"}.get(row.source, "")
    return f"{row.actor}{how}"


def step_lines(step: Step) -> list[str]:
    """Two lines a step: when, what and the entry it left; then who or what did it, and why."""
    row = step.row
    head = f"  {to_text(step.at)}  {_scope(row.klass)}: "
    if step.expired:
        return [f"{head}expired: the {row.level} {row.cause} entry no longer blocks"]
    if row.change is Change.CLEARED:
        last = f", last at {to_text(row.last_refused_at)}" if row.last_refused_at else ""
        refused = f"; it had refused {row.refused_count} send(s){last}"
        lines = [f"{head}cleared: was {_entry(row)}: {row.reason}{refused}"]
    else:
        lines = [f"{head}{_WORDS[row.change]}: {_entry(row)}: {row.reason}"]
    why = f": {row.note}" if row.note and row.note != row.reason else ""
    lines.append(f"      by {_who(row)}{why}")
    return lines


def story_lines(steps: Sequence[Step]) -> list[str]:
    if not steps:
        return ["history: none recorded"]
    lines = ["history (oldest first):"]
    for step in steps:
        lines += step_lines(step)
    return lines


def step_json(step: Step) -> dict[str, Any]:
    row = step.row
    return {
        "at": to_text(step.at),
        "class": row.klass,
        "change": step.change,
        "source": None if step.expired else str(row.source),
        "actor": None if step.expired else row.actor,
        "note": None if step.expired else row.note,
        "event_id": None if step.expired else row.event_id,
        "feedback_id": row.feedback_id,
        "ses_message_id": row.ses_message_id,
        "level": str(row.level),
        "cause": str(row.cause),
        "reason": row.reason,
        "expires_at": maybe_text(row.expires_at),
        "refused_count": row.refused_count,
        "last_refused_at": maybe_text(row.last_refused_at),
        "window_seconds": row.window_seconds,
    }

