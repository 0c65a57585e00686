"""The daily dashboard: `ses-relay report` files from replayed SES events, and the daily mail.

Known events are built from tests/fixtures/ses (timestamps moved into the window),
replayed with `ses-relay feedback replay` into a real store, then read back from
the CSV (csv), the XLSX (openpyxl) and the HTML (html.parser).
"""

from __future__ import annotations

import copy
import csv
import email
import email.policy
import io
import json
import mailbox
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from feedback.reports.daily import due, read_last, write_last
from feedback.reports.report import COLUMNS
from relay.timeutil import utcnow
from tests.conftest import FIXTURES, run_cli, wait_until
from tests.support.readers import html_rows, links
from tests.support.relaydb import create_store


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def ses_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def bounce_event(
    n: int, when: datetime, recipient: str, *, subject: str, sender: str, ip: str,
    bounce_type: str = "Permanent", subtype: str = "General", klass: str = "transactional",
) -> dict[str, Any]:  # fmt: skip
    doc = copy.deepcopy(fixture("event_bounce_permanent.json"))
    b, mail = doc["bounce"], doc["mail"]
    b.update(bounceType=bounce_type, bounceSubType=subtype, timestamp=ses_time(when), feedbackId=f"fb-b-{n}")
    b["bouncedRecipients"][0]["emailAddress"] = recipient
    b["bouncedRecipients"][0]["diagnosticCode"] = f"smtp; 550 5.1.1 <{recipient}> unknown ({n})"
    mail.update(timestamp=ses_time(when - timedelta(seconds=5)), messageId=f"msg-bounce-{n}", source=sender)
    mail["destination"] = [recipient]
    mail["commonHeaders"] = {"from": [f"App <{sender}>"], "to": [recipient], "subject": subject}
    mail["tags"].update({"ses:source-ip": [ip], "message-class": [klass], "submission-id": [f"sub-{n}"]})
    return doc


def complaint_event(n: int, when: datetime, recipient: str, *, subject: str, sender: str, ip: str) -> dict:
    doc = copy.deepcopy(fixture("event_complaint.json"))
    c, mail = doc["complaint"], doc["mail"]
    c.update(timestamp=ses_time(when), feedbackId=f"fb-c-{n}")
    c["complainedRecipients"] = [{"emailAddress": recipient}]
    mail.update(timestamp=ses_time(when - timedelta(minutes=1)), messageId=f"msg-complaint-{n}")
    mail["source"] = sender
    mail["destination"] = [recipient]
    mail["commonHeaders"] = {"from": [sender], "to": [recipient], "subject": subject}
    mail["tags"].update({"ses:source-ip": [ip], "submission-id": [f"sub-c-{n}"]})
    return doc


def delivery_event(when: datetime) -> dict[str, Any]:
    doc = copy.deepcopy(fixture("event_delivery.json"))
    doc["mail"]["timestamp"] = ses_time(when)
    doc["delivery"]["timestamp"] = ses_time(when)
    return doc


def known_events(now: datetime) -> tuple[list[dict[str, Any]], set[tuple[str, ...]]]:
    """Events in and out of the last 24 hours; the expected report rows (all columns but time)."""
    docs = [
        bounce_event(1, now - timedelta(hours=2), "gone@example.net", subject="Your order #1",
                     sender="orders@shop.example.com", ip="192.0.2.10"),
        bounce_event(2, now - timedelta(hours=5, minutes=3), "full@example.org", subject="Newsletter",
                     sender="news@list.example.com", ip="198.51.100.7", bounce_type="Transient",
                     subtype="MailboxFull", klass="list"),
        complaint_event(3, now - timedelta(hours=1), "annoyed@example.com", subject="48 hours only",
                        sender="deals@promo.example.com", ip="192.0.2.12"),
        # outside the window, and not a bounce or complaint: neither is in the report
        bounce_event(4, now - timedelta(days=3), "old@example.net", subject="Old",
                     sender="orders@shop.example.com", ip="192.0.2.10"),
        delivery_event(now - timedelta(hours=3)),
    ]  # fmt: skip
    expected = {
        ("gone@example.net", "Permanent", "General", "smtp; 550 5.1.1 <gone@example.net> unknown (1)",
         "Your order #1", "msg-bounce-1", "transactional", "orders@shop.example.com", "192.0.2.10"),
        ("full@example.org", "Transient", "MailboxFull", "smtp; 550 5.1.1 <full@example.org> unknown (2)",
         "Newsletter", "msg-bounce-2", "list", "news@list.example.com", "198.51.100.7"),
        ("annoyed@example.com", "Complaint", "abuse", "", "48 hours only", "msg-complaint-3", "bulk",
         "deals@promo.example.com", "192.0.2.12"),
    }  # fmt: skip
    return docs, expected


def replay(tmp_path: Path, data_dir: Path, docs: list[dict[str, Any]]) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps(docs))
    result = run_cli("feedback", "replay", str(events), data_dir=data_dir, check=True)
    assert "0 dead letter(s)" in result.stdout, result.stdout


def test_report_writes_html_csv_and_xlsx_with_every_bounce_and_complaint_of_the_window(tmp_path) -> None:
    data_dir = tmp_path / "data"
    docs, expected = known_events(utcnow())
    replay(tmp_path, data_dir, docs)
    html_file, csv_file, xlsx_file = tmp_path / "r.html", tmp_path / "r.csv", tmp_path / "r.xlsx"
    files = ["--html", str(html_file), "--csv", str(csv_file), "--xlsx", str(xlsx_file)]
    result = run_cli("report", "--since", "24h", *files, data_dir=data_dir, check=True)
    assert result.stdout.count("(3 row(s))") == 3

    with csv_file.open(newline="", encoding="utf-8") as fh:
        csv_rows = list(csv.reader(fh))
    assert tuple(csv_rows[0]) == COLUMNS
    assert {tuple(r[1:]) for r in csv_rows[1:]} == expected
    assert len(csv_rows) == 4
    times = [datetime.strptime(r[0], "%Y-%m-%dT%H:%M:%S.%fZ") for r in csv_rows[1:]]
    assert times == sorted(times)  # oldest first

    wb = openpyxl.load_workbook(xlsx_file)
    assert wb.sheetnames == ["Events", "Summary"]
    sheet = list(wb["Events"].iter_rows(values_only=True))
    assert sheet[0] == COLUMNS
    assert {tuple(v or "" for v in r[1:]) for r in sheet[1:]} == expected
    assert all(isinstance(r[0], datetime) for r in sheet[1:])
    assert all(abs(r[0] - t) < timedelta(milliseconds=2) for r, t in zip(sheet[1:], times, strict=True))
    summary = {r[0]: r for r in wb["Summary"].iter_rows(values_only=True) if r and r[0]}
    header = list(summary["class"])
    overall = dict(zip(header, summary["all"], strict=True))
    counted = (overall["bounces"], overall["permanent"], overall["transient"], overall["complaints"])
    assert counted == (2, 1, 1, 1)
    assert dict(zip(header, summary["bulk"], strict=True))["complaints"] == 1

    page = html_file.read_text(encoding="utf-8")
    assert html_rows(page) == csv_rows[1:]
    assert links(page) == {"export": "r.xlsx"}  # Export to Excel: the spreadsheet beside the page
    assert (
        "<svg" in page
        and "<script" not in page
        and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )  # self-contained: nothing fetched from anywhere


def test_report_without_files_prints_the_summary_and_json_has_the_rows(tmp_path) -> None:
    data_dir = tmp_path / "data"
    docs, expected = known_events(utcnow())
    replay(tmp_path, data_dir, docs)
    text = run_cli("report", data_dir=data_dir, check=True).stdout
    lines = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert lines["all"][2:7] == ["2", "1", "1", "0", "1"]  # bounces, perm, trans, undet, complaints
    doc = json.loads(run_cli("report", "--since", "7d", "--json", data_dir=data_dir, check=True).stdout)
    assert doc["overall"]["bounces"] == 3  # the 3-day-old bounce is inside 7 days
    assert {r["recipient"] for r in doc["rows"]} == {e[0] for e in expected} | {"old@example.net"}
    assert len(doc["hourly"]) in (168, 169)


@pytest.mark.parametrize("since", ["yesterday", "-5h", "0"])
def test_report_refuses_a_bad_window(tmp_path, since) -> None:
    result = run_cli("report", "--since", since, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "--since" in result.stderr


def test_report_says_why_it_cannot_write_a_file(tmp_path) -> None:
    create_store(tmp_path / "data")
    result = run_cli("report", "--csv", str(tmp_path / "missing" / "r.csv"), data_dir=tmp_path / "data")
    assert result.returncode == 1
    assert "cannot write" in result.stderr


def test_daily_report_is_due_once_a_day_from_the_configured_hour(tmp_path) -> None:
    day = date(2024, 3, 5)
    at = lambda h: datetime(2024, 3, 5, h, 0, tzinfo=UTC)  # noqa: E731
    assert not due(at(6), 7, None)
    assert due(at(7), 7, None)
    assert due(at(23), 7, day - timedelta(days=1))
    assert not due(at(9), 7, day)
    state = tmp_path / "last"
    assert read_last(state) is None
    write_last(state, day)
    assert read_last(state) == day
    state.write_text("garbage")
    assert read_last(state) is None


def mailbox_messages(data_dir: Path, address: str) -> list[email.message.EmailMessage]:
    path = data_dir / "sandbox" / address
    if not path.exists():
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.keys()]


def test_serve_mails_the_daily_report_once_with_the_xlsx_attached(tmp_path, relay_factory) -> None:
    data_dir = tmp_path / "data"
    docs, expected = known_events(utcnow())
    replay(tmp_path, data_dir, docs)
    config = '[report]\ndaily_to = "ops@example.com"\nhour = 0\n'
    relay = relay_factory(config, sandbox=True)
    got = wait_until(lambda: mailbox_messages(data_dir, "ops@example.com"), timeout=20, what="a report mail")
    assert len(got) == 1
    msg = got[0]
    assert msg["Subject"].endswith("2 bounce(s), 1 complaint(s)")
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None
    assert {tuple(r[1:]) for r in html_rows(html_part.get_content())} == expected
    attachments = list(msg.iter_attachments())
    assert len(attachments) == 1 and attachments[0].get_filename().endswith(".xlsx")
    wb = openpyxl.load_workbook(io.BytesIO(attachments[0].get_content()))
    rows = list(wb["Events"].iter_rows(values_only=True))[1:]
    assert {tuple(v or "" for v in r[1:]) for r in rows} == expected
    assert read_last(data_dir / "report-daily.last") == utcnow().date()

    # A restart the same day does not send it again.
    relay.stop()
    relay = relay_factory(config, sandbox=True)
    time.sleep(2.0)  # the reporter checks at start; a second report would be spooled and sent by now
    assert len(mailbox_messages(data_dir, "ops@example.com")) == 1
    assert "daily report spooled" not in relay.log()
