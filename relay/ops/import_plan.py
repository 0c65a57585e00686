"""What an import changes, row by row, before anything is written (pure).

Each imported entry is weighed against what is on file (and against the rows before
it in the same file): `new` when nothing covers its (address, class), `raise` when
an entry exists but the import would raise its level or extend its expiry, `covered`
when an entry at least as strong and as long already blocks the address in that
class (an all-class entry covers a class's one). Only new and raised entries are
written, so importing the same file again writes nothing and adds nothing to the
audit log: every time in an imported entry comes from the file, never from the
clock, so a second reading yields the same entries and finds them all covered.

The plan is taken on a snapshot; the writes still go through the store's merge
(levels never go down, expiries only extend), so a suppression the relay records in
between is never weakened, it only makes the plan's words slightly stale.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from relay.suppression import ALL, Suppression, merge
from relay.timeutil import to_text


class Outcome(enum.StrEnum):
    NEW = "new"
    RAISE = "raise"
    COVERED = "covered"

    def words(self, dry_run: bool) -> str:
        if self is Outcome.NEW:
            return "new"
        if self is Outcome.RAISE:
            return "would raise" if dry_run else "raised"
        return "already covered"


@dataclass(frozen=True)
class PlannedRow:
    line: int
    entry: Suppression
    outcome: Outcome


def covers(held: Suppression, new: Suppression, now: datetime) -> bool:
    """Whether `held` already blocks everything `new` would: as strong, and as long."""
    if not held.active(now) or held.level < new.level:
        return False
    if held.expires_at is None:
        return True
    return new.expires_at is not None and held.expires_at >= new.expires_at


def plan(
    entries: Sequence[Suppression],
    lines: Sequence[int],
    existing: Mapping[str, Iterable[Suppression]],
    now: datetime,
) -> list[PlannedRow]:
    """Sort the entries of an import into new, raise and covered; `existing`: the
    unexpired entries on file, by address (any class)."""
    held: dict[tuple[str, str], Suppression] = {}
    for address, on_file in existing.items():
        for e in on_file:
            if e.active(now):
                held[(address, e.klass)] = e
    rows: list[PlannedRow] = []
    for entry, line in zip(entries, lines, strict=True):
        key = (entry.address, entry.klass)
        here = [held.get(key)] + ([held.get((entry.address, ALL))] if entry.klass != ALL else [])
        if any(h is not None and covers(h, entry, now) for h in here):
            rows.append(PlannedRow(line, entry, Outcome.COVERED))
            continue
        current = held.get(key)
        rows.append(PlannedRow(line, entry, Outcome.NEW if current is None else Outcome.RAISE))
        held[key] = merge(current, entry)
    return rows


def to_write(rows: Iterable[PlannedRow]) -> list[Suppression]:
    return [r.entry for r in rows if r.outcome is not Outcome.COVERED]


def counts(rows: Iterable[PlannedRow]) -> dict[Outcome, int]:
    out = dict.fromkeys(Outcome, 0)
    for r in rows:
        out[r.outcome] += 1
    return out


def describe(row: PlannedRow, *, dry_run: bool) -> str:
    """One line of a dry run: the row, what it becomes here and what the import does with it."""
    e = row.entry
    expires = "never expires" if e.expires_at is None else f"expires {to_text(e.expires_at)}"
    return (
        f"line {row.line}: {e.address}: class {e.klass}, {e.level} {e.cause}, {expires}: "
        f"{row.outcome.words(dry_run)}"
    )
