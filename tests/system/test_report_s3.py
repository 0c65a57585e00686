"""The dashboard published to S3: `report --publish` and the daily mail's link, against moto's S3 server.

boto3 finds moto through AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, as users point it
at any S3-compatible endpoint; the links are fetched with plain urllib, as a mail
reader's browser would, and the page's "Export to Excel" link is followed from the
page itself.
"""

from __future__ import annotations

import copy
import email
import email.policy
import io
import json
import re
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import openpyxl
import pytest

from feedback.reports.publish import report_keys
from relay.config import parse_s3_uri
from relay.timeutil import utcnow
from tests.conftest import run_cli, wait_until
from tests.support.readers import html_rows, links
from tests.support.relaydb import create_store
from tests.system.test_report import fixture, known_events, mailbox_messages, replay, ses_time

HTML_TYPE = "text/html; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SEVEN_DAYS = 7 * 24 * 3600


def send_event(n: int, when: datetime, klass: str, count: int) -> dict[str, Any]:
    """SES's Send event for `count` recipients of one message: the sends the rates are counted on."""
    doc = copy.deepcopy(fixture("event_send.json"))
    doc["mail"].update(timestamp=ses_time(when), messageId=f"msg-send-{klass}-{n}")
    doc["mail"]["destination"] = [f"r{n}-{i}@example.com" for i in range(count)]
    doc["mail"]["tags"]["message-class"] = [klass]
    return doc


def events_with_sends(now: datetime) -> tuple[list[dict[str, Any]], set[tuple[str, ...]]]:
    """known_events plus sends: 40 transactional (1 permanent bounce: 2.5 %), 100 bulk (1 complaint: 1 %)."""
    docs, expected = known_events(now)
    docs += [send_event(1, now - timedelta(hours=3), "transactional", 40),
             send_event(2, now - timedelta(hours=4), "bulk", 100)]  # fmt: skip
    return docs, expected


class Cells(HTMLParser):
    """The text of each body row of <table id="standing">."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in = self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._in = ("id", "standing") in attrs
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = False
        elif tag == "table":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in and self._cell:
            self.rows[-1][-1] += data


def standing_rows(page: str) -> dict[str, list[str]]:
    parser = Cells()
    parser.feed(page)
    return {r[0]: r[1:] for r in parser.rows[1:]}


def check_standing(page: str, *, chart: bool = True) -> None:
    """Per class, where its rates stand against SES's review lines (events_with_sends' numbers)."""
    rows = standing_rows(page)
    assert rows["transactional"][:2] == ["40", "ok"]
    assert rows["transactional"][2] == "2.50%: 50% of the 5% review line"
    assert rows["bulk"][:2] == ["100", "pause"] and "over SES's 0.5% pause line" in rows["bulk"][3]
    assert rows["list"][:2] == ["0", "no sends"]
    assert rows["all"][:2] == ["140", "pause"]
    if chart:  # both review lines drawn on the per-hour chart
        assert page.count('<line class="review"') == 2


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=endpoint)


def new_bucket(endpoint: str) -> str:
    name = f"reports-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.headers["Content-Type"], reply.read()


def assert_presigned(url: str, key: str, expires_in: int) -> None:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith("/" + key)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # SigV4: the kind that lasts up to 7 days
    assert query["X-Amz-Expires"] == [str(expires_in)]
    assert query["X-Amz-Signature"][0]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def check_published_pair(
    s3: Any, bucket: str, prefix: str, page_url: str, expected: set[tuple[str, ...]], expiry: int
) -> None:
    """The two objects, their keys and types; the page's link fetches it; its Export link the sheet."""
    html_key, xlsx_key = report_keys(prefix, utcnow().date())
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {html_key, xlsx_key}
    assert html_key == f"{prefix}{utcnow():%Y-%m-%d}/report.html"
    assert s3.head_object(Bucket=bucket, Key=html_key)["ContentType"] == HTML_TYPE
    head = s3.head_object(Bucket=bucket, Key=xlsx_key)
    assert head["ContentType"] == XLSX_TYPE
    assert head["ContentDisposition"].startswith("attachment; filename=")

    assert_presigned(page_url, html_key, expiry)
    status, ctype, body = fetch(page_url)
    assert (status, ctype) == (200, HTML_TYPE)
    assert body == s3.get_object(Bucket=bucket, Key=html_key)["Body"].read()
    page = body.decode("utf-8")
    assert {tuple(r[1:]) for r in html_rows(page)} == expected
    check_standing(page)

    export = links(page)["export"]
    assert_presigned(export, xlsx_key, expiry)
    status, ctype, sheet = fetch(export)
    assert (status, ctype) == (200, XLSX_TYPE)
    rows = list(openpyxl.load_workbook(io.BytesIO(sheet))["Events"].iter_rows(values_only=True))[1:]
    assert {tuple(v or "" for v in r[1:]) for r in rows} == expected
    # Why the page links to a signed URL: the sheet's plain URL, where a relative link
    # would lead, is refused by the private bucket.
    plain = export.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(plain)
    assert refused.value.code == 403


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_report_publish_uploads_the_pair_and_prints_a_link_that_fetches_the_page(
    tmp_path, moto_server, variable
) -> None:
    data_dir = tmp_path / "data"
    docs, expected = events_with_sends(utcnow())
    replay(tmp_path, data_dir, docs)
    bucket = new_bucket(moto_server)
    config = write_config(
        tmp_path / "relay.toml",
        f'[report]\ns3_uri = "s3://{bucket}/ses/daily"\nlink_expiry = "2d"\n'
        # SES's own endpoint setting is for SES alone: S3 must not go there
        '[ses]\nendpoint_url = "http://127.0.0.1:9"\n',
    )
    env = {variable: moto_server}
    result = run_cli("report", "--since", "24h", "--publish", data_dir=data_dir, config=config, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"published s3://{bucket}/ses/daily/{utcnow():%Y-%m-%d}/report.html and ")
    assert "temporary credentials" in result.stderr  # the test's keys carry a session token
    check_published_pair(s3_client(moto_server), bucket, "ses/daily/", lines[-1], expected, 2 * 24 * 3600)

    # --json says the same, with both links; the run replaces the day's pair.
    doc = run_cli(
        "report", "--publish", "--json", data_dir=data_dir, config=config, env=env, check=True
    ).stdout
    published = json.loads(doc)["published"]
    assert published["html"] == f"s3://{bucket}/ses/daily/{utcnow():%Y-%m-%d}/report.html"
    assert published["xlsx"].endswith("/report.xlsx") and published["temporary_credentials"] is True
    assert fetch(published["xlsx_url"])[1] == XLSX_TYPE
    s3 = s3_client(moto_server)
    check_published_pair(s3, bucket, "ses/daily/", published["html_url"], expected, 2 * 24 * 3600)


def test_report_publish_says_what_is_missing_or_wrong(tmp_path, moto_server) -> None:
    data_dir = tmp_path / "data"
    create_store(data_dir)
    env = {"AWS_ENDPOINT_URL_S3": moto_server}
    unset = run_cli("report", "--publish", data_dir=data_dir, env=env)
    assert unset.returncode == 2 and "s3_uri" in unset.stderr

    missing = write_config(tmp_path / "missing.toml", '[report]\ns3_uri = "s3://no-such-bucket-here/"\n')
    result = run_cli("report", "--publish", data_dir=data_dir, config=missing, env=env)
    assert result.returncode == 1
    assert "cannot publish" in result.stderr and "NoSuchBucket" in result.stderr

    for text, words in [
        ('link_expiry = "8d"', "at most 7 days"),
        ('link_expiry = "0s"', "at least one second"),
        ('s3_uri = "https://bucket.s3.amazonaws.com/x"', "not an S3 URI"),
        ('s3_uri = "s3://Reports_Bucket/x"', "not an S3 bucket name"),
        ('s3_uri = "s3://192.168.1.1/x"', "not an S3 bucket name"),
    ]:
        bad = write_config(tmp_path / "bad.toml", f"[report]\n{text}\n")
        result = run_cli("report", "--publish", data_dir=data_dir, config=bad, env=env)
        assert result.returncode == 2, text
        assert "report." in result.stderr and words in result.stderr, result.stderr


def test_s3_uri_and_keys() -> None:
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    assert parse_s3_uri("s3://bucket/") == ("bucket", "")
    assert parse_s3_uri("s3://my.bucket-1//a/b//") == ("my.bucket-1", "a/b/")
    day = utcnow().date()
    assert report_keys("", day) == (f"{day}/report.html", f"{day}/report.xlsx")
    assert report_keys("a/b/", day)[1] == f"a/b/{day}/report.xlsx"
    for bad in ("bucket", "s3:/bucket", "s3://ab", "s3://a..b/", "s3://-bucket/", "s3://" + "b" * 64):
        with pytest.raises(ValueError):
            parse_s3_uri(bad)


def mail_parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    page = msg.get_body(preferencelist=("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()


def test_serve_publishes_the_daily_report_and_mails_a_link_to_it(
    tmp_path, relay_factory, moto_server
) -> None:
    data_dir = tmp_path / "data"
    docs, expected = events_with_sends(utcnow())
    replay(tmp_path, data_dir, docs)
    bucket = new_bucket(moto_server)
    config = f'[report]\ndaily_to = "ops@example.com"\nhour = 0\ns3_uri = "s3://{bucket}/dash/"\n'
    relay = relay_factory(config, sandbox=True, env={"AWS_ENDPOINT_URL_S3": moto_server})
    got = wait_until(lambda: mailbox_messages(data_dir, "ops@example.com"), timeout=30, what="a report mail")
    assert len(got) == 1
    msg = got[0]
    assert msg["Subject"].endswith("2 bounce(s), 1 complaint(s)")
    assert list(msg.iter_attachments()) == []  # linked, not attached
    text, page = mail_parts(msg)
    dashboard = links(page)["dashboard"]
    assert dashboard in text and links(page)["export"] in text
    assert re.search(r"The links work until \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "bulk: pause (bounce rate 0.00%" in text and "list: no sends counted" in text  # per class
    check_standing(page, chart=False)
    assert 'id="events"' not in page and "<svg" not in page  # the chart and rows are behind the link
    check_published_pair(s3_client(moto_server), bucket, "dash/", dashboard, expected, SEVEN_DAYS)
    relay.wait_log("daily report published to s3://")
    relay.wait_log("temporary credentials")  # said once, in the log, when the links are made


def test_daily_report_attaches_the_files_when_the_bucket_refuses_them(
    tmp_path, relay_factory, moto_server
) -> None:
    data_dir = tmp_path / "data"
    docs, expected = known_events(utcnow())
    replay(tmp_path, data_dir, docs)
    config = '[report]\ndaily_to = "ops@example.com"\nhour = 0\ns3_uri = "s3://no-such-reports-bucket/"\n'
    relay = relay_factory(config, sandbox=True, env={"AWS_ENDPOINT_URL_S3": moto_server})
    got = wait_until(lambda: mailbox_messages(data_dir, "ops@example.com"), timeout=30, what="a report mail")
    text, page = mail_parts(got[0])
    assert "could not be published" in text and "NoSuchBucket" in text
    assert {tuple(r[1:]) for r in html_rows(page)} == expected
    attachments = list(got[0].iter_attachments())
    assert [a.get_content_type() for a in attachments] == [XLSX_TYPE]
    relay.wait_log("daily report not published, attaching the files instead")
    assert (data_dir / "report-daily.last").read_text().strip() == utcnow().date().isoformat()
