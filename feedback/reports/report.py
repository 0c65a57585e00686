"""The bounce and complaint dashboard: read once from the store, written as text, JSON, CSV, XLSX or HTML.

Everything here but `collect` is a function of data: the store query happens once,
every writer renders the same `Report` (feedback.reports.model), so the CSV, the
spreadsheet (feedback.reports.xlsx) and the page (feedback.reports.html) can never
disagree about what happened.

The cells hold text that strangers wrote (subjects, remote servers' diagnostics),
so each format gets its own defence: HTML escapes everything; the XLSX stores every
string as a string; the CSV prefixes a quote to cells that a spreadsheet would run as
a formula (OWASP's CSV-injection advice).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from feedback.reports.html import html_page, svg_chart
from feedback.reports.model import (
    ALL_CLASSES,
    COLUMNS,
    Hour,
    Report,
    Row,
    SummaryLine,
    build,
    hour_floor,
    hourly,
    rate_text,
    row_of,
    standing,
    standings,
)
from feedback.reports.xlsx import XLSX_CONTENT_TYPE, workbook, xlsx_bytes
from relay.store import Store
from relay.timeutil import to_text

__all__ = [
    "ALL_CLASSES", "COLUMNS", "XLSX_CONTENT_TYPE", "Hour", "Report", "Row", "SummaryLine", "as_json",
    "build", "collect", "csv_safe", "csv_text", "file_writers", "hour_floor", "hourly", "html_page",
    "row_of", "standing_text", "summary_dict", "summary_text", "svg_chart", "workbook", "write_csv",
    "write_html", "write_xlsx", "xlsx_bytes",
]  # fmt: skip

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def collect(store: Store, *, since: datetime, until: datetime) -> Report:
    """Read the window's events and send counts from the store and build the report."""
    events = await store.report_events(since, until)
    sent = await store.outcome_counts(since)
    return build((e.record for e in events), since=since, until=until, sent=sent)


# -- text and JSON ------------------------------------------------------------------


def summary_text(report: Report) -> str:
    lines = [
        f"bounces and complaints from {to_text(report.since)} to {to_text(report.until)}",
        f"{'class':<16} {'sent':>8} {'bounces':>8} {'perm':>6} {'trans':>6} {'undet':>6} "
        f"{'complaints':>10} {'bounce%':>8} {'complaint%':>10}",
    ]
    for s in report.summary:
        lines.append(
            f"{s.scope:<16} {s.sent:>8} {s.bounces:>8} {s.permanent:>6} {s.transient:>6} {s.undetermined:>6} "
            f"{s.complaints:>10} {rate_text(s.bounce_rate):>8} {rate_text(s.complaint_rate):>10}"
        )
    return "\n".join(lines)


def standing_text(report: Report) -> str:
    """One sentence per class: where its rates stand against SES's review lines."""
    return "\n".join(st.sentence() for st in standings(report))


def summary_dict(line: SummaryLine) -> dict[str, Any]:
    return {
        "sent": line.sent,
        "bounces": line.bounces,
        "bounced_permanent": line.permanent,
        "bounced_transient": line.transient,
        "bounced_undetermined": line.undetermined,
        "complaints": line.complaints,
        "bounce_rate": line.bounce_rate,
        "complaint_rate": line.complaint_rate,
        "standing": standing(line).level,
    }


def as_json(report: Report) -> dict[str, Any]:
    return {
        "since": to_text(report.since),
        "until": to_text(report.until),
        "overall": summary_dict(report.overall),
        "classes": {s.scope: summary_dict(s) for s in report.summary[1:]},
        "rows": [dict(zip(COLUMNS, r.values(), strict=True)) for r in report.rows],
        "hourly": [
            {"hour": to_text(h.start), "bounces": h.bounces, "complaints": h.complaints,
             "bounced_permanent": h.permanent}
            for h in report.hourly
        ],
    }  # fmt: skip


# -- CSV --------------------------------------------------------------------------------


def csv_safe(value: str) -> str:
    """A leading quote keeps a spreadsheet from running the cell as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_text(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in report.rows:
        writer.writerow([csv_safe(v) for v in row.values()])
    return out.getvalue()


# -- files ------------------------------------------------------------------------------


def write_csv(report: Report, path: Path) -> None:
    _write_atomically(path, csv_text(report).encode("utf-8"))


def write_xlsx(report: Report, path: Path) -> None:
    _write_atomically(path, xlsx_bytes(report))


def write_html(report: Report, path: Path, *, xlsx_href: str | None = None) -> None:
    _write_atomically(path, html_page(report, xlsx_href=xlsx_href).encode("utf-8"))


def file_writers(
    html_path: Path | None, csv_path: Path | None, xlsx_path: Path | None
) -> list[tuple[Path, Callable[[Report, Path], None]]]:
    """(path, writer) for each file asked for; a page written with a spreadsheet links to it.

    The link is relative, so the pair keeps working when moved or served together.
    """
    out: list[tuple[Path, Callable[[Report, Path], None]]] = []
    if html_path is not None:
        href = None
        if xlsx_path is not None:
            href = quote(os.path.relpath(xlsx_path.absolute(), html_path.absolute().parent))
        out.append((html_path, partial(write_html, xlsx_href=href)))
    if csv_path is not None:
        out.append((csv_path, write_csv))
    if xlsx_path is not None:
        out.append((xlsx_path, write_xlsx))
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    """A half-written report is worse than none: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
