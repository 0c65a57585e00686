"""The sandbox upstream: simulator outcomes, Maildir copies and SES-format events."""

from __future__ import annotations

import json
import logging
import mailbox
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from relay.sandbox.feed import Feed
from relay.sandbox.stand_in import SUPPRESSION_DIAGNOSTIC, SandboxSes, read_events
from relay.sending.ses_api import Disposition, SendRequest, SesApi, SesError

SIM = "simulator.amazonses.com"
MESSAGE_ID = re.compile(
    r"^0100[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-000000$"
)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- the stand-in end to end -------------------------------------------------------


class StepClock:
    """A clock that moves 5 ms per reading, so timestamps are known and ordered."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=5)
        return self.now


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxSes]:
    root = tmp_path / "sandbox"
    yield SandboxSes(root, Feed(root / "feed"), clock=StepClock())


def make_raw(to: str = "user@example.com", subject: str = "Hello from the sandbox") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender Name <sender@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@example.com>"
    msg["Date"] = "Mon, 06 May 2024 07:08:09 +0000"
    msg.set_content("Body line one.\nBody line two.\n")
    return msg.as_bytes()


RECIPIENTS = (
    f"success@{SIM}",
    f"bounce+x@{SIM}",
    f"complaint@{SIM}",
    f"suppressionlist@{SIM}",
    "user@example.com",
)


def send_all(sandbox: SandboxSes, raw: bytes | None = None) -> str:
    return sandbox.send_raw(
        SendRequest(
            raw=raw or make_raw(),
            source="sender@example.com",
            destinations=RECIPIENTS,
            configuration_set="tx",
            tags=(("message-class", "transactional"), ("submission-id", "018f4a2b3c4d9e8f7a6b")),
        )
    )


def envelopes(sandbox: SandboxSes) -> list[dict[str, Any]]:
    return [json.loads(item.body) for item in sandbox.feed.receive(1000)]


def test_sandbox_is_an_ses_api(sandbox: SandboxSes) -> None:
    api: SesApi = sandbox
    assert api.max_send_rate() >= 100


def test_construction_warns_loudly_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay.sandbox.stand_in"):
        SandboxSes(tmp_path / "sb", Feed(tmp_path / "sb" / "feed"))
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "SANDBOX" in record.getMessage()
    assert "leaves this machine" in record.getMessage()
    assert str(tmp_path / "sb") in record.getMessage()


def test_delivered_copies_land_in_maildirs_with_return_path(sandbox: SandboxSes) -> None:
    raw = make_raw()
    send_all(sandbox, raw)
    for address in (f"success@{SIM}", f"complaint@{SIM}", "user@example.com"):
        box = mailbox.Maildir(sandbox.root / address, create=False)
        [key] = box.keys()
        data = box.get_bytes(key)
        assert data.startswith(b"Return-Path: <sender@example.com>\n")
        assert data.split(b"\n", 1)[1] == raw  # the message exactly as sent
        assert box[key]["Subject"] == "Hello from the sandbox"
    # Bounced recipients get nothing, and no directory is made for them.
    assert not (sandbox.root / f"bounce+x@{SIM}").exists()
    assert not (sandbox.root / f"suppressionlist@{SIM}").exists()


def test_crlf_messages_keep_crlf(sandbox: SandboxSes) -> None:
    raw = b"From: a@example.com\r\nTo: user@example.com\r\nSubject: crlf\r\n\r\nbody\r\n"
    sandbox.send_raw(SendRequest(raw=raw, source="a@example.com", destinations=("user@example.com",)))
    box = mailbox.Maildir(sandbox.root / "user@example.com", create=False)
    [key] = box.keys()
    assert box.get_bytes(key) == b"Return-Path: <a@example.com>\r\n" + raw


def test_events_are_sns_envelopes_of_ses_event_publishing_json(sandbox: SandboxSes) -> None:
    message_id = send_all(sandbox)
    assert MESSAGE_ID.match(message_id)
    bodies = envelopes(sandbox)
    for body in bodies:
        assert body["Type"] == "Notification"
        assert body["TopicArn"] == "arn:aws:sns:us-east-1:000000000000:ses-relay-sandbox"
        assert re.match(r"^[0-9a-f-]{36}$", body["MessageId"])
        assert TIMESTAMP.match(body["Timestamp"])
        assert body["SignatureVersion"] == "1"
        assert isinstance(body["Message"], str)  # SNS carries the event as a JSON string
        assert {"Signature", "SigningCertURL", "UnsubscribeURL"} <= body.keys()
    assert len({b["MessageId"] for b in bodies}) == len(bodies)

    events = [json.loads(b["Message"]) for b in bodies]
    assert all("notificationType" not in e for e in events)
    # One Send for the call, then each recipient in order; a complaint follows its delivery.
    assert [(e["eventType"], _who(e)) for e in events] == [
        ("Send", None),
        ("Delivery", f"success@{SIM}"),
        ("Bounce", f"bounce+x@{SIM}"),
        ("Delivery", f"complaint@{SIM}"),
        ("Complaint", f"complaint@{SIM}"),
        ("Bounce", f"suppressionlist@{SIM}"),
        ("Delivery", "user@example.com"),
    ]
    assert events[0]["send"] == {}
    for event in events:
        assert event["mail"] == events[0]["mail"]  # one mail object per call
        assert event["mail"]["messageId"] == message_id


def _who(event: dict[str, Any]) -> str | None:
    kind = event["eventType"]
    if kind == "Delivery":
        [who] = event["delivery"]["recipients"]
        return who
    if kind == "Bounce":
        [who] = event["bounce"]["bouncedRecipients"]
        return who["emailAddress"]
    if kind == "Complaint":
        [who] = event["complaint"]["complainedRecipients"]
        return who["emailAddress"]
    return None


def test_mail_object_matches_ses(sandbox: SandboxSes) -> None:
    message_id = send_all(sandbox)
    mail = json.loads(envelopes(sandbox)[0]["Message"])["mail"]
    assert mail["timestamp"] == "2024-05-06T07:08:09.005Z"
    assert mail["source"] == "sender@example.com"
    assert mail["sourceArn"] == "arn:aws:ses:us-east-1:000000000000:identity/example.com"
    assert mail["sendingAccountId"] == "000000000000"
    assert mail["messageId"] == message_id
    assert mail["destination"] == list(RECIPIENTS)
    assert mail["headersTruncated"] is False
    names = [h["name"] for h in mail["headers"]]
    assert names[:5] == ["From", "To", "Subject", "Message-ID", "Date"]
    assert {"name": "Subject", "value": "Hello from the sandbox"} in mail["headers"]
    assert mail["commonHeaders"] == {
        "from": ["Sender Name <sender@example.com>"],
        "to": ["user@example.com"],
        "messageId": "<m1@example.com>",
        "subject": "Hello from the sandbox",
        "date": "Mon, 06 May 2024 07:08:09 +0000",
    }
    assert mail["tags"] == {
        "ses:configuration-set": ["tx"],
        "ses:source-ip": ["127.0.0.1"],
        "ses:from-domain": ["example.com"],
        "ses:caller-identity": ["ses-relay-sandbox"],
        "message-class": ["transactional"],
        "submission-id": ["018f4a2b3c4d9e8f7a6b"],
    }


def test_common_headers_list_each_address(sandbox: SandboxSes) -> None:
    raw = make_raw(to=f"Ann <success@{SIM}>, user@example.com")
    sandbox.send_raw(
        SendRequest(raw=raw, source="sender@example.com", destinations=(f"success@{SIM}", "user@example.com"))
    )
    mail = json.loads(envelopes(sandbox)[0]["Message"])["mail"]
    assert mail["commonHeaders"]["to"] == [f"Ann <success@{SIM}>", "user@example.com"]
    assert "ses:configuration-set" not in mail["tags"]  # none was given


def test_bounce_complaint_and_delivery_fields(sandbox: SandboxSes) -> None:
    send_all(sandbox)
    events = [json.loads(b["Message"]) for b in envelopes(sandbox)]
    hard, listed = (e["bounce"] for e in events if e["eventType"] == "Bounce")
    assert hard["bounceType"] == "Permanent"
    assert hard["bounceSubType"] == "General"
    assert hard["bouncedRecipients"] == [
        {
            "emailAddress": f"bounce+x@{SIM}",
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
    ]
    assert hard["reportingMTA"] == "dns; amazonses.com"
    assert hard["remoteMtaIp"] == "127.0.0.1"
    assert TIMESTAMP.match(hard["timestamp"])
    assert MESSAGE_ID.match(hard["feedbackId"])
    assert listed["bounceSubType"] == "OnAccountSuppressionList"
    assert listed["bouncedRecipients"][0]["diagnosticCode"] == SUPPRESSION_DIAGNOSTIC
    assert hard["feedbackId"] != listed["feedbackId"]

    [complaint] = (e["complaint"] for e in events if e["eventType"] == "Complaint")
    assert complaint["complainedRecipients"] == [{"emailAddress": f"complaint@{SIM}"}]
    assert complaint["complaintFeedbackType"] == "abuse"
    assert complaint["complaintSubType"] is None
    assert complaint["userAgent"]
    assert TIMESTAMP.match(complaint["arrivalDate"])
    assert MESSAGE_ID.match(complaint["feedbackId"])

    deliveries = [e["delivery"] for e in events if e["eventType"] == "Delivery"]
    assert len(deliveries) == 3
    for delivery in deliveries:
        assert delivery["smtpResponse"] == "250 2.6.0 Message received"
        assert delivery["processingTimeMillis"] > 0
        assert delivery["reportingMTA"]
        assert delivery["remoteMtaIp"] == "127.0.0.1"
        assert delivery["timestamp"] > json.loads(envelopes(sandbox)[0]["Message"])["mail"]["timestamp"]


def test_feed_is_consumed_like_a_queue(sandbox: SandboxSes) -> None:
    first = send_all(sandbox)
    second = sandbox.send_raw(
        SendRequest(raw=make_raw(), source="s@example.com", destinations=("u@example.com",))
    )
    items = sandbox.feed.receive(100)
    ids = [json.loads(json.loads(i.body)["Message"])["mail"]["messageId"] for i in items]
    assert ids == [first] * 7 + [second] * 2  # in the order they were sent
    for item in items[:7]:
        sandbox.feed.delete(item)
    assert [e["mail"]["messageId"] for e in read_events(sandbox.feed)] == [second, second]


def test_duplicate_destinations_get_one_copy_and_one_event(sandbox: SandboxSes) -> None:
    sandbox.send_raw(
        SendRequest(
            raw=make_raw(),
            source="s@example.com",
            destinations=("user@example.com", "User@Example.com", "Name <user@example.com>"),
        )
    )
    assert [e["eventType"] for e in read_events(sandbox.feed)] == ["Send", "Delivery"]
    assert len(mailbox.Maildir(sandbox.root / "user@example.com", create=False)) == 1


def test_fail_next_raises_then_recovers_and_writes_nothing(sandbox: SandboxSes) -> None:
    sandbox.fail_next(2, "Throttling", "Maximum sending rate exceeded.", Disposition.RETRY, http_status=400)
    request = SendRequest(raw=make_raw(), source="s@example.com", destinations=("user@example.com",))
    for _ in range(2):
        with pytest.raises(SesError) as info:
            sandbox.send_raw(request)
        assert info.value.code == "Throttling"
        assert info.value.message == "Maximum sending rate exceeded."
        assert info.value.retryable
        assert info.value.http_status == 400
    assert sandbox.feed.receive() == []
    assert not (sandbox.root / "user@example.com").exists()
    assert MESSAGE_ID.match(sandbox.send_raw(request))
    sandbox.fail_next(1, "MessageRejected", "Email address is not verified.", Disposition.PERMANENT)
    with pytest.raises(SesError) as info:
        sandbox.send_raw(request)
    assert not info.value.retryable
    sandbox.fail_next(3)
    sandbox.fail_next(0)  # cancels what is pending
    sandbox.send_raw(request)
    with pytest.raises(ValueError):
        sandbox.fail_next(-1)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"destinations": ()}, "InvalidParameterValue"),
        ({"destinations": tuple(f"u{i}@example.com" for i in range(51))}, "InvalidParameterValue"),
        ({"destinations": ("not-an-address",)}, "InvalidParameterValue"),
        ({"destinations": ("ok@example.com", "bad@@example.com")}, "InvalidParameterValue"),
        ({"destinations": ("../../etc@example..com",)}, "InvalidParameterValue"),
        ({"tags": (("message class", "x"),)}, "InvalidParameterValue"),
        ({"tags": (("id", "a/b"),)}, "InvalidParameterValue"),
        ({"tags": (("id", ""),)}, "InvalidParameterValue"),
        ({"tags": tuple((f"t{i}", "v") for i in range(51))}, "InvalidParameterValue"),
        ({"source": "no domain"}, "InvalidParameterValue"),
        ({"raw": b""}, "InvalidParameterValue"),
        ({"raw": b"x" * (40 * 1024 * 1024 + 1)}, "MessageRejected"),
    ],
)
def test_what_ses_refuses_is_refused_before_anything_is_written(
    sandbox: SandboxSes, changes: dict[str, Any], code: str
) -> None:
    fields: dict[str, Any] = {
        "raw": make_raw(),
        "source": "s@example.com",
        "destinations": ("user@example.com",),
    }
    fields.update(changes)
    with pytest.raises(SesError) as info:
        sandbox.send_raw(SendRequest(**fields))
    assert info.value.code == code
    assert info.value.disposition is Disposition.PERMANENT
    assert sandbox.feed.receive() == []
    assert [p.name for p in sandbox.root.iterdir()] == ["feed"]


def test_source_falls_back_to_from_header_and_8bit_headers_stay_valid_json(sandbox: SandboxSes) -> None:
    raw = b"From: Caf\xe9 <cafe@example.org>\nTo: user@example.com\nSubject: caf\xe9\n\nbody\n"
    sandbox.send_raw(SendRequest(raw=raw, source="", destinations=("user@example.com",)))
    [send, delivery] = read_events(sandbox.feed)
    assert send["mail"]["source"].endswith("<cafe@example.org>")
    assert send["mail"]["tags"]["ses:from-domain"] == ["example.org"]
    box = mailbox.Maildir(sandbox.root / "user@example.com", create=False)
    assert box.get_bytes(next(iter(box.keys()))).startswith(b"Return-Path: <cafe@example.org>\n")
    assert delivery["eventType"] == "Delivery"


def test_every_body_parses_with_the_feedback_parser(sandbox: SandboxSes) -> None:
    from feedback.bodies import parse_body

    send_all(sandbox)
    bodies = [item.body for item in sandbox.feed.receive(100)]
    assert len(bodies) == 7
    for body in bodies:
        assert parse_body(body).events
