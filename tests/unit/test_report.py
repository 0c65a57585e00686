"""The report's pure parts: hostile text stays text in CSV, XLSX and HTML; hourly buckets."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import openpyxl

from feedback.reports.report import (
    COLUMNS,
    build,
    csv_text,
    file_writers,
    hourly,
    html_page,
    row_of,
    workbook,
)
from relay.store import EventRecord
from tests.support.readers import html_rows, links


def hostile_report() -> Any:
    now = datetime(2024, 3, 5, 12, 30, tzinfo=UTC)
    record = EventRecord(
        dedupe_key="k", kind="bounce", ses_type="Bounce", recipient="x@example.com", ses_message_id="m1",
        occurred_at=now - timedelta(minutes=30), raw="{}", bounce_type="Permanent", bounce_subtype="General",
        diagnostic="smtp; 550 \x00\x07bad\x1b bytes", subject='=HYPERLINK("http://evil.example","x")',
        from_address="<script>alert(1)</script>@example.com", source_ip="-1+2",
    )  # fmt: skip
    return build([record], since=now - timedelta(hours=24), until=now)


def test_text_written_by_strangers_stays_text_in_every_format() -> None:
    report = hostile_report()
    sheet = workbook(report)["Events"]
    subject = sheet.cell(row=2, column=COLUMNS.index("subject") + 1)
    assert (subject.value, subject.data_type) == ('=HYPERLINK("http://evil.example","x")', "s")
    assert sheet.cell(row=2, column=COLUMNS.index("diagnostic") + 1).value == "smtp; 550 bad bytes"
    buffer = io.BytesIO()
    workbook(report).save(buffer)  # openpyxl refuses control characters; they were dropped
    buffer.seek(0)
    reread = openpyxl.load_workbook(buffer)["Events"]
    assert reread.cell(row=2, column=COLUMNS.index("subject") + 1).data_type == "s"

    rows = list(csv.reader(io.StringIO(csv_text(report))))
    cells = dict(zip(COLUMNS, rows[1], strict=True))
    assert cells["subject"].startswith("'=HYPERLINK")
    assert cells["source_ip"] == "'-1+2"
    assert cells["recipient"] == "x@example.com"

    page = html_page(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in page
    assert html_rows(page)[0][COLUMNS.index("subject")] == '=HYPERLINK("http://evil.example","x")'


def test_hourly_buckets_cover_the_window_with_zeros_and_ignore_rows_outside() -> None:
    since = datetime(2024, 3, 5, 10, 15, tzinfo=UTC)
    until = since + timedelta(hours=3)

    def row(kind: str, when: datetime, bounce_type: str | None = None) -> Any:
        record = EventRecord(kind, kind, kind.title(), "a@x.org", "m", when, "{}", bounce_type=bounce_type)
        return row_of(record)

    rows = [
        row("bounce", since + timedelta(minutes=30)),  # 10:45
        row("complaint", since + timedelta(hours=1)),  # 11:15
        row("bounce", since + timedelta(hours=1, minutes=1)),  # 11:16
        row("bounce", since + timedelta(hours=1, minutes=2), "Permanent"),  # 11:17
        row("bounce", since - timedelta(hours=2)),  # before the window
        row("bounce", until + timedelta(hours=1)),  # after it
    ]
    buckets = hourly(rows, since, until)
    counted = [(h.start.hour, h.bounces, h.complaints, h.permanent) for h in buckets]
    assert counted == [(10, 1, 0, 0), (11, 2, 1, 1), (12, 0, 0, 0), (13, 0, 0, 0)]
    assert rows[0].type == "Undetermined"  # a bounce without a type is not silently dropped


def test_a_page_written_with_a_spreadsheet_elsewhere_links_to_it_relatively(tmp_path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "sheets").mkdir()
    page, sheet = tmp_path / "pages" / "day.html", tmp_path / "sheets" / "day 1.xlsx"
    for path, write in file_writers(page, None, sheet):
        write(hostile_report(), path)
    href = links(page.read_text(encoding="utf-8"))["export"]
    assert href == "../sheets/day%201.xlsx"
    assert (page.parent / unquote(href)).resolve() == sheet.resolve()
    openpyxl.load_workbook(sheet)  # the file it points to is the spreadsheet
