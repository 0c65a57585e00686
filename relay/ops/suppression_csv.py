"""Suppressions as CSV: export for people, SES and other hosts; import with per-row errors (pure).

The first two columns are exactly what SES's bulk import of the account-level
suppression list reads (`email,reason`, reason BOUNCE or COMPLAINT), so the same
file shape moves addresses between ses-relay and SES. SES knows only those two
reasons; every cause of ours that is not a bounce describes a recipient who must not
get mail (complaint, unsubscribe, admin block), which is what SES's COMPLAINT means.

The full format adds, after SES's two, the columns that make an export a faithful
copy of the list (class, expiry, level, our cause and reason text, the SES ids that
caused it and the refusal counters), so that exporting from one data dir and
importing into a fresh one reproduces the list. It starts with a header row; the SES
format has none and holds only the all-classes entries that never expire, since an
SES entry has neither a class nor an expiry.

Import takes either shape, with or without a header (without one the columns are
positional, in the order of `COLUMNS`). Each row is validated on its own: a bad row
is reported with its line number and the rest are still imported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TextIO

from relay.addresses import AddressError, normalise
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import maybe_text, to_text

COLUMNS: tuple[str, ...] = (
    "email",
    "reason",
    "class",
    "expires_at",
    "level",
    "cause",
    "detail",
    "created_at",
    "feedback_id",
    "ses_message_id",
    "refused_count",
    "last_refused_at",
)
SES_REASONS = ("BOUNCE", "COMPLAINT")
HEADER_NAMES = {"email": "email", "emailaddress": "email", "email_address": "email", "address": "email"}
Format = Literal["full", "ses"]


def ses_reason(cause: Cause) -> str:
    """SES's reason for one of our causes: only a bounce is a BOUNCE."""
    return "BOUNCE" if cause is Cause.BOUNCE else "COMPLAINT"


def default_level(reason: str) -> Level:
    """What a bare SES row means here: a bounce is hard, a complaint permanent (the suppression policy)."""
    return Level.HARD if reason == "BOUNCE" else Level.PERMANENT


def in_ses_export(entry: Suppression) -> bool:
    """SES's list has no classes and no expiry: only all-class entries that never expire fit."""
    return entry.klass == ALL and entry.expires_at is None


def export_rows(entries: Iterable[Suppression], fmt: Format = "full") -> list[list[str]]:
    """The rows of an export (header included for the full format)."""
    if fmt == "ses":
        return [[e.address, ses_reason(e.cause)] for e in entries if in_ses_export(e)]
    rows = [list(COLUMNS)]
    for e in entries:
        rows.append(
            [
                e.address,
                ses_reason(e.cause),
                e.klass,
                maybe_text(e.expires_at) or "",
                str(e.level),
                str(e.cause),
                e.reason,
                to_text(e.created_at),
                e.feedback_id or "",
                e.ses_message_id or "",
                str(e.refused_count),
                maybe_text(e.last_refused_at) or "",
            ]
        )
    return rows


def write_csv(entries: Iterable[Suppression], out: TextIO, fmt: Format = "full") -> int:
    """Write an export to `out`; returns the number of suppressions written (header not counted)."""
    rows = export_rows(entries, fmt)
    csv.writer(out, lineterminator="\n").writerows(rows)
    return len(rows) - (1 if fmt == "full" else 0)


@dataclass(frozen=True)
class RowProblem:
    """A row that was not imported: its line in the file and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedImport:
    entries: list[Suppression] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each entry, for audit details
    errors: list[RowProblem] = field(default_factory=list)
    skipped: list[RowProblem] = field(default_factory=list)  # valid but already expired


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (an unknown header column); no row is imported."""


def _time(text: str, column: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{column}: {text!r} is not an ISO-8601 date or date-time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _header(row: Sequence[str]) -> tuple[str, ...] | None:
    """The column names when `row` is a header row, else None."""
    first = row[0].strip().lower() if row else ""
    if first not in HEADER_NAMES:
        return None
    names = []
    for cell in row:
        name = HEADER_NAMES.get(cell.strip().lower(), cell.strip().lower())
        if name not in COLUMNS:
            raise CsvFormatError(f"line 1: unknown column {cell.strip()!r}; known: {', '.join(COLUMNS)}")
        if name in names:
            raise CsvFormatError(f"line 1: column {name!r} appears twice")
        names.append(name)
    if "reason" not in names:
        raise CsvFormatError("line 1: the header has no 'reason' column (BOUNCE or COMPLAINT)")
    return tuple(names)


def parse_row(
    values: dict[str, str], *, now: datetime, classes: Collection[str], default_class: str = ALL
) -> Suppression:
    """One validated suppression from a row's cells; ValueError names the bad column."""
    try:
        address = normalise(values.get("email", ""))
    except AddressError as exc:
        raise ValueError(f"email: {exc}") from None
    reason = values.get("reason", "").strip().upper()
    if reason not in SES_REASONS:
        raise ValueError(f"reason: {values.get('reason', '')!r} is not BOUNCE or COMPLAINT")
    klass = values.get("class", "") or default_class
    if klass != ALL and klass not in classes:
        raise ValueError(f"class: {klass!r} is not a configured class ({', '.join(sorted(classes))}) or '*'")
    try:
        level = Level.parse(values["level"]) if values.get("level") else default_level(reason)
    except ValueError as exc:
        raise ValueError(f"level: {exc}") from None
    cause_text = values.get("cause", "").lower()
    if cause_text:
        try:
            cause = Cause(cause_text)
        except ValueError:
            known = ", ".join(c.value for c in Cause)
            raise ValueError(f"cause: {cause_text!r} is not one of {known}") from None
    else:
        cause = Cause.BOUNCE if reason == "BOUNCE" else Cause.COMPLAINT
    count_text = values.get("refused_count", "") or "0"
    if not count_text.isdigit():
        raise ValueError(f"refused_count: {count_text!r} is not a whole number")
    return Suppression(
        address=address,
        klass=klass,
        level=level,
        cause=cause,
        reason=values.get("detail", "") or f"imported ({reason})",
        created_at=_time(values.get("created_at", ""), "created_at") or now,
        updated_at=now,
        expires_at=_time(values.get("expires_at", ""), "expires_at"),
        feedback_id=values.get("feedback_id", "") or None,
        ses_message_id=values.get("ses_message_id", "") or None,
        refused_count=int(count_text),
        last_refused_at=_time(values.get("last_refused_at", ""), "last_refused_at"),
    )


def parse_csv(
    source: str | Iterable[str],
    *,
    now: datetime,
    classes: Collection[str],
    default_class: str = ALL,
) -> ParsedImport:
    """Validate every row of an import; raise CsvFormatError only when the header is unusable."""
    lines = io.StringIO(source) if isinstance(source, str) else source
    reader = csv.reader(lines)
    result = ParsedImport()
    names: tuple[str, ...] | None = None
    first = True
    for row in reader:
        line = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if first:
            first = False
            names = _header(cells)
            if names is not None:
                continue
        columns = names or COLUMNS
        if len(cells) > len(columns):
            result.errors.append(RowProblem(line, f"{len(cells)} columns, at most {len(columns)} expected"))
            continue
        if len(cells) < 2 and names is None:
            result.errors.append(RowProblem(line, "expected at least email,reason"))
            continue
        try:
            entry = parse_row(
                dict(zip(columns, cells, strict=False)), now=now, classes=classes, default_class=default_class
            )
        except ValueError as exc:
            result.errors.append(RowProblem(line, str(exc)))
            continue
        if entry.expires_at is not None and not entry.active(now):
            result.skipped.append(RowProblem(line, f"{entry.address} expired at {to_text(entry.expires_at)}"))
            continue
        result.entries.append(entry)
        result.lines.append(line)
    return result
