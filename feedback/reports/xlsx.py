"""The report as a spreadsheet: sheet "Events" (the rows) and sheet "Summary".

Cells hold text that strangers wrote (subjects, remote servers' diagnostics): every
string is stored as a string (openpyxl would otherwise take "=..." for a formula)
without the control characters the format cannot hold.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from feedback.reports.model import COLUMNS, Report, standings

XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


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
             "bounce_rate", "complaint_rate", "standing")  # fmt: skip
    _header(summary, 4, names)
    for i, (s, stand) in enumerate(zip(report.summary, standings(report), strict=True), 5):
        values = (s.scope, s.sent, s.bounces, s.permanent, s.transient, s.undetermined, s.complaints,
                  s.bounce_rate, s.complaint_rate, stand.level)  # fmt: skip
        for col, value in enumerate(values, 1):
            _put(summary, i, col, value)
        summary.cell(row=i, column=8).number_format = "0.00%"
        summary.cell(row=i, column=9).number_format = "0.000%"
    first = 5 + len(report.summary) + 1
    _header(summary, first, ("hour (UTC)", "bounces", "complaints", "permanent"))
    for i, hour in enumerate(report.hourly, first + 1):
        _put(summary, i, 1, hour.start)
        _put(summary, i, 2, hour.bounces)
        _put(summary, i, 3, hour.complaints)
        _put(summary, i, 4, hour.permanent)
    summary.column_dimensions["A"].width = 20
    return wb


def xlsx_bytes(report: Report) -> bytes:
    out = io.BytesIO()
    workbook(report).save(out)
    return out.getvalue()
