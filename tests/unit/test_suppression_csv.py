"""Suppression CSV rows without the store: round trip through parse, line numbers, bad headers and rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from relay.ops.suppression_csv import CsvFormatError, export_rows, parse_csv
from relay.suppression import Cause, Level
from tests.support.entries import NOW, suppression

CLASSES = ("transactional", "list", "bulk")


# -- the pure part -----------------------------------------------------------------------


entry = suppression


def test_rows_round_trip_through_parse_without_the_store() -> None:
    first = entry(
        "a@example.com",
        feedback_id="f-1",
        ses_message_id="m-1",
        refused_count=3,
        last_refused_at=NOW - timedelta(hours=1),
    )
    second = entry(
        "b@example.com",
        klass="list",
        cause=Cause.UNSUBSCRIBE,
        level=Level.PERMANENT,
        reason="unsubscribed, via List-Unsubscribe",
        expires_at=NOW + timedelta(days=2),
    )
    entries = [first, second]
    out = io.StringIO()
    csv.writer(out).writerows(export_rows(entries))
    parsed = parse_csv(out.getvalue(), now=NOW, classes=CLASSES)
    assert parsed.errors == [] and parsed.skipped == []
    assert parsed.entries == entries
    assert export_rows(entries)[2][1] == "COMPLAINT"  # unsubscribe is a COMPLAINT to SES


def test_line_numbers_count_physical_lines_and_header_aliases() -> None:
    text = 'emailAddress,reason,detail\n"a@example.com",BOUNCE,"two\nlines"\nbad,BOUNCE,x\n'
    parsed = parse_csv(text, now=NOW, classes=CLASSES)
    assert [e.reason for e in parsed.entries] == ["two\nlines"]
    assert [p.line for p in parsed.errors] == [4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("email,reason,email\n", "appears twice"),
        ("email,class\n", "no 'reason' column"),
    ],
)
def test_unusable_headers(text: str, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        parse_csv(text, now=NOW, classes=CLASSES)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a@example.com", "at least email,reason"),
        ("a@example.com,BOUNCE,*,,loud", "level:"),
        ("a@example.com,BOUNCE,*,,hard,shouting", "cause: 'shouting'"),
        ("a@example.com,BOUNCE,*,,hard,bounce,d,,,,-1", "refused_count"),
        ("a@example.com,BOUNCE,*,,hard,bounce,d,yesterday", "created_at"),
    ],
)
def test_bad_row_messages_name_the_column(row: str, message: str) -> None:
    parsed = parse_csv(row + "\n", now=NOW, classes=CLASSES)
    assert parsed.entries == []
    assert len(parsed.errors) == 1 and message in parsed.errors[0].message
    assert json.dumps(str(parsed.errors[0])).startswith('"line 1:')
