"""The bounce and complaint dashboard: rows, summary and hourly chart, written as CSV, XLSX or HTML.

Everything here but `collect` is a function of data: the store query happens once,
the three writers render the same `Report`, so the CSV, the spreadsheet and the
page can never disagree about what happened.

The cells hold text that strangers wrote (subjects, remote servers' diagnostics),
so each format gets its own defence: HTML escapes everything; the XLSX stores
every string as a string (openpyxl would otherwise take "=..." for a formula) and
drops the control characters the format cannot hold; the CSV prefixes a quote to
cells that a spreadsheet would run as a formula (OWASP's CSV-injection advice).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from relay.ops.stats import UNKNOWN_CLASS, Counts, summarise
from relay.store import EventRecord, Store
from relay.timeutil import to_text

COLUMNS = (
    "time", "recipient", "type", "subtype", "diagnostic", "subject", "message_id", "class",
    "from_address", "source_ip",
)  # fmt: skip
ALL_CLASSES = "all"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
XLSX_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
BOUNCE_COLOUR = "#c0392b"
COMPLAINT_COLOUR = "#e67e22"


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
        return self.permanent / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    rows: tuple[Row, ...]
    summary: tuple[SummaryLine, ...]  # overall first, then per class
    hourly: tuple[tuple[datetime, int, int], ...] = field(default=())  # (hour, bounces, complaints)

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


def hourly(rows: Iterable[Row], since: datetime, until: datetime) -> tuple[tuple[datetime, int, int], ...]:
    """Bounces and complaints per UTC hour, every hour of the window present (zeros included)."""
    buckets: dict[datetime, list[int]] = {}
    hour = hour_floor(since)
    while hour < until:
        buckets[hour] = [0, 0]
        hour += timedelta(hours=1)
    for row in rows:
        bucket = buckets.get(hour_floor(row.time))
        if bucket is not None:
            bucket[1 if row.is_complaint else 0] += 1
    return tuple((h, b, c) for h, (b, c) in buckets.items())


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


async def collect(store: Store, *, since: datetime, until: datetime) -> Report:
    """Read the window's events and send counts from the store and build the report."""
    events = await store.report_events(since, until)
    sent = await store.outcome_counts(since)
    return build((e.record for e in events), since=since, until=until, sent=sent)


# -- text and JSON ------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:.2%}"


def summary_text(report: Report) -> str:
    lines = [
        f"bounces and complaints from {to_text(report.since)} to {to_text(report.until)}",
        f"{'class':<16} {'sent':>8} {'bounces':>8} {'perm':>6} {'trans':>6} {'undet':>6} "
        f"{'complaints':>10} {'bounce%':>8} {'complaint%':>10}",
    ]
    for s in report.summary:
        lines.append(
            f"{s.scope:<16} {s.sent:>8} {s.bounces:>8} {s.permanent:>6} {s.transient:>6} {s.undetermined:>6} "
            f"{s.complaints:>10} {_rate(s.bounce_rate):>8} {_rate(s.complaint_rate):>10}"
        )
    return "\n".join(lines)


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
    }


def as_json(report: Report) -> dict[str, Any]:
    return {
        "since": to_text(report.since),
        "until": to_text(report.until),
        "overall": summary_dict(report.overall),
        "classes": {s.scope: summary_dict(s) for s in report.summary[1:]},
        "rows": [dict(zip(COLUMNS, r.values(), strict=True)) for r in report.rows],
        "hourly": [{"hour": to_text(h), "bounces": b, "complaints": c} for h, b, c in report.hourly],
    }


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


def write_csv(report: Report, path: Path) -> None:
    _write_atomically(path, csv_text(report).encode("utf-8"))


# -- XLSX -------------------------------------------------------------------------------


def _xlsx_text(value: str) -> str:
    return ILLEGAL_CHARACTERS_RE.sub("", value)


def _put(ws: Any, row: int, col: int, value: object) -> None:
    cell = ws.cell(row=row, column=col)
    if isinstance(value, str):
        cell.value = _xlsx_text(value)
        cell.data_type = "s"  # never a formula, whatever the text starts with
    elif isinstance(value, datetime):
        cell.value = value.replace(tzinfo=None)  # UTC; Excel has no time zones
        cell.number_format = XLSX_TIME_FORMAT
    else:
        cell.value = value


def _header(ws: Any, row: int, names: Sequence[str]) -> None:
    for col, name in enumerate(names, 1):
        _put(ws, row, col, name)
        ws.cell(row=row, column=col).font = Font(bold=True)


def workbook(report: Report) -> Workbook:
    """Sheet "Events": one row per bounce or complaint; sheet "Summary": the window, totals, hours."""
    wb = Workbook()
    events = wb.active
    events.title = "Events"
    _header(events, 1, COLUMNS)
    for i, row in enumerate(report.rows, 2):
        cells: tuple[object, ...] = (row.time, *row.values()[1:])
        for col, value in enumerate(cells, 1):
            _put(events, i, col, value)
    events.freeze_panes = "A2"
    events.auto_filter.ref = f"A1:J{max(1, len(report.rows) + 1)}"
    widths = (20, 32, 13, 20, 60, 40, 62, 14, 32, 16)
    for col, width in zip("ABCDEFGHIJ", widths, strict=True):
        events.column_dimensions[col].width = width

    summary = wb.create_sheet("Summary")
    _put(summary, 1, 1, "since (UTC)")
    _put(summary, 1, 2, report.since)
    _put(summary, 2, 1, "until (UTC)")
    _put(summary, 2, 2, report.until)
    names = ("class", "sent", "bounces", "permanent", "transient", "undetermined", "complaints",
             "bounce_rate", "complaint_rate")  # fmt: skip
    _header(summary, 4, names)
    for i, s in enumerate(report.summary, 5):
        values = (s.scope, s.sent, s.bounces, s.permanent, s.transient, s.undetermined, s.complaints,
                  s.bounce_rate, s.complaint_rate)  # fmt: skip
        for col, value in enumerate(values, 1):
            _put(summary, i, col, value)
        summary.cell(row=i, column=8).number_format = "0.00%"
        summary.cell(row=i, column=9).number_format = "0.000%"
    first = 5 + len(report.summary) + 1
    _header(summary, first, ("hour (UTC)", "bounces", "complaints"))
    for i, (hour, bounces, complaints) in enumerate(report.hourly, first + 1):
        _put(summary, i, 1, hour)
        _put(summary, i, 2, bounces)
        _put(summary, i, 3, complaints)
    summary.column_dimensions["A"].width = 20
    return wb


def xlsx_bytes(report: Report) -> bytes:
    out = io.BytesIO()
    workbook(report).save(out)
    return out.getvalue()


def write_xlsx(report: Report, path: Path) -> None:
    _write_atomically(path, xlsx_bytes(report))


# -- HTML -------------------------------------------------------------------------------

CHART_WIDTH = 960
CHART_HEIGHT = 220
CHART_PAD = 36


def svg_chart(buckets: Sequence[tuple[datetime, int, int]]) -> str:
    """Stacked bars of bounces and complaints per hour as inline SVG: no script, no fonts to fetch."""
    e = html.escape
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    plot_w, plot_h = width - 2 * pad, height - 2 * pad
    peak = max((b + c for _h, b, c in buckets), default=0)
    top = max(peak, 1)
    n = max(len(buckets), 1)
    step = plot_w / n
    bar = max(step * 0.8, 1.0)
    label_every = max(1, -(-n // 12))  # at most a dozen hour labels
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="bounces and complaints per hour">',
        f'<line x1="{pad}" y1="{pad + plot_h}" x2="{pad + plot_w}" y2="{pad + plot_h}" stroke="#888"/>',
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{pad - 4}" y="{pad + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, (hour, bounces, complaints) in enumerate(buckets):
        x = pad + i * step + (step - bar) / 2
        y = pad + plot_h
        for count, colour, what in ((bounces, BOUNCE_COLOUR, "bounces"), (complaints, COMPLAINT_COLOUR,
                                                                            "complaints")):  # fmt: skip
            if count:
                h = plot_h * count / top
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                    f"<title>{e(hour.strftime('%Y-%m-%d %H:00'))} UTC: {count} {what}</title></rect>"
                )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{pad + plot_h + 14}" font-size="10" '
                f'text-anchor="middle">{e(hour.strftime("%H:00"))}</text>'
            )
    legend_y = height - 6
    parts += [
        f'<rect x="{pad}" y="{legend_y - 9}" width="10" height="10" fill="{BOUNCE_COLOUR}"/>',
        f'<text x="{pad + 14}" y="{legend_y}" font-size="11">bounces</text>',
        f'<rect x="{pad + 80}" y="{legend_y - 9}" width="10" height="10" fill="{COMPLAINT_COLOUR}"/>',
        f'<text x="{pad + 94}" y="{legend_y}" font-size="11">complaints</text>',
        "</svg>",
    ]
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.n { text-align: right; }
tr.Complaint td { background: #fff6ec; }
tr.Permanent td { background: #fdeeee; }
"""


def html_page(report: Report, *, max_rows: int | None = None) -> str:
    """A self-contained page: summary table, hourly chart, then the rows (all, or the first max_rows)."""
    e = html.escape
    since, until = to_text(report.since), to_text(report.until)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ses-relay report {e(since)} to {e(until)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>ses-relay: bounces and complaints</h1>",
        f"<p>From {e(since)} to {e(until)} (UTC): {report.overall.bounces} bounce(s), "
        f"{report.overall.complaints} complaint(s).</p>",
        '<h2>Summary</h2><table id="summary"><thead><tr>',
    ]
    heads = ("class", "sent", "bounces", "permanent", "transient", "undetermined", "complaints",
             "bounce rate", "complaint rate")  # fmt: skip
    out.append("".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>")
    for s in report.summary:
        nums = (s.sent, s.bounces, s.permanent, s.transient, s.undetermined, s.complaints)
        out.append(
            f"<tr><td>{e(s.scope)}</td>"
            + "".join(f'<td class="n">{v}</td>' for v in nums)
            + f'<td class="n">{_rate(s.bounce_rate)}</td><td class="n">{_rate(s.complaint_rate)}</td></tr>'
        )
    out.append("</tbody></table>")
    out.append("<h2>Per hour</h2>")
    out.append(svg_chart(report.hourly))
    shown = report.rows if max_rows is None else report.rows[:max_rows]
    out.append('<h2>Events</h2><table id="events"><thead><tr>')
    out.append("".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
    for row in shown:
        out.append(
            f'<tr class="{e(row.type)}">' + "".join(f"<td>{e(v)}</td>" for v in row.values()) + "</tr>"
        )
    out.append("</tbody></table>")
    if len(shown) < len(report.rows):
        out.append(f"<p>{len(report.rows) - len(shown)} more row(s) in the attached spreadsheet.</p>")
    if not report.rows:
        out.append("<p>No bounces or complaints in this window.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(report: Report, path: Path) -> None:
    _write_atomically(path, html_page(report).encode("utf-8"))


def _write_atomically(path: Path, data: bytes) -> None:
    """A half-written report is worse than none: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
