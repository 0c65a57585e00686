"""Notice composition: golden files per reason, parsed back as a mail client would, and
the rules for when no notice may be sent.

Golden files pin every byte: run `UPDATE_GOLDEN=1 pytest tests/unit/test_notices.py` after an
intended change and review the diff of tests/golden/notices/ like code.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.parser import HeaderParser

import pytest

from feedback.notices.compose import NoticeRequest, compose, should_notify, suppression_note
from relay.vocabulary import NoticeReason
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "notices"
NOW = datetime(2026, 11, 24, 4, 4, 31, tzinfo=UTC)
ARRIVAL = NOW - timedelta(minutes=7)
SENDER = "sender@example.com"
MTA = "relay.example.com"
NOTICE_SENDER = "MAILER-DAEMON@relay.example.com"

ORIGINAL_HEADERS = (
    "Received: from app.example.com (app.example.com [192.0.2.10])\r\n"
    "\tby relay.example.com (ses-relay) with ESMTP id 019b5a1c2e3f4a5b6c7d\r\n"
    "\tfor <bob@example.net>; Tue, 24 Nov 2026 03:57:31 +0000\r\n"
    "From: Example Shop <sender@example.com>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: Your order 1042 has shipped\r\n"
    "Date: Tue, 24 Nov 2026 03:57:30 +0000\r\n"
    "Message-ID: <order-1042@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
)


def make_request(reason: str, **changes: object) -> NoticeRequest:
    base = NoticeRequest(
        reason=reason,
        recipient="bob@example.net",
        original_sender=SENDER,
        original_headers=ORIGINAL_HEADERS,
        original_message_id="<order-1042@example.com>",
        original_subject="Your order 1042 has shipped",
        submission_id="019b5a1c2e3f4a5b6c7d",
        arrival_date=ARRIVAL,
        last_attempt=ARRIVAL + timedelta(seconds=3),
        message_class="transactional",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# One case per reason (and per message-at-fault subtype, which changes the advice).
CASES: dict[str, tuple[NoticeRequest, str]] = {
    "permanent_bounce": (
        make_request(
            "permanent_bounce",
            status="5.1.1",
            diagnostic="smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
            bounce_type="Permanent",
            bounce_subtype="General",
            extra=suppression_note(NOW + timedelta(days=30), now=NOW),
        ),
        "5.1.1",
    ),
    "permanent_bounce_noemail": (
        make_request(
            "permanent_bounce",
            diagnostic="smtp; 550 5.1.1 user unknown",
            bounce_type="Permanent",
            bounce_subtype="NoEmail",
            extra=suppression_note(None, now=NOW),
        ),
        "5.1.1",
    ),
    "soft_bounce_escalated": (
        make_request(
            "soft_bounce_escalated",
            status="4.2.2",
            diagnostic="smtp; 452 4.2.2 The email account that you tried to reach is over quota",
            bounce_type="Transient",
            bounce_subtype="MailboxFull",
            extra=suppression_note(NOW + timedelta(days=7), now=NOW),
        ),
        "4.2.2",
    ),
    "message_rejected_content": (
        make_request(
            "message_rejected_content",
            status="5.7.1",
            diagnostic="smtp; 554 5.7.1 Message rejected due to content restrictions (URL blocklisted)",
            bounce_type="Transient",
            bounce_subtype="ContentRejected",
        ),
        "5.7.1",
    ),
    "message_rejected_attachment": (
        make_request(
            "message_rejected_content",
            diagnostic="smtp; 552 5.7.0 Our system detected an illegal attachment (.exe)",
            bounce_type="Transient",
            bounce_subtype="AttachmentRejected",
        ),
        "5.6.0",
    ),
    "message_too_large": (
        make_request(
            "message_too_large",
            status="5.3.4",
            diagnostic="smtp; 552 5.3.4 Message size exceeds fixed maximum message size",
            bounce_type="Transient",
            bounce_subtype="MessageTooLarge",
        ),
        "5.3.4",
    ),
    "sender_at_fault": (
        make_request(
            "sender_at_fault",
            status="5.7.26",
            diagnostic=(
                "smtp; 550 5.7.26 This mail has been blocked because the sender is unauthenticated. "
                "Gmail requires all senders to authenticate with either SPF or DKIM."
            ),
            bounce_type="Permanent",
            bounce_subtype="General",
        ),
        "5.7.26",
    ),
    "reject": (
        make_request("reject", diagnostic="Bad content"),
        "5.7.1",
    ),
    "rendering_failure": (
        make_request(
            "rendering_failure",
            diagnostic="Attribute 'attributeName' is not present in the rendering data.",
        ),
        "5.6.0",
    ),
    "send_failed": (
        make_request(
            "send_failed",
            diagnostic=(
                "MessageRejected: Email address is not verified. The following identities failed "
                "the check in region US-EAST-1: sender@example.com"
            ),
        ),
        "5.0.0",
    ),
    "suppressed": (
        make_request(
            "suppressed",
            status="5.1.1",
            diagnostic="550 5.1.1 <bob@example.net>: recipient suppressed (bounce)",
            extra="Permanent/NoEmail: 550 5.1.1 no such user (since 2026-10-02)",
        ),
        "5.1.1",
    ),
}


def notice_for(req: NoticeRequest, message_id: str = "<notice-1@relay.example.com>") -> bytes:
    return compose(req, notice_sender=NOTICE_SENDER, reporting_mta=MTA, now=NOW, message_id=message_id)


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts_of(msg: EmailMessage) -> dict[str, EmailMessage]:
    return {part.get_content_type(): part for part in msg.iter_parts()}  # type: ignore[misc]


def test_every_reason_has_a_golden_case() -> None:
    assert {req.reason for req, _ in CASES.values()} == set(NoticeReason)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    req, _ = CASES[name]
    data = notice_for(req)
    path = GOLDEN / f"{name}.eml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"missing {path}; run with UPDATE_GOLDEN=1 and review it"
    assert data == path.read_bytes(), f"{path.name} differs; if intended, rerun with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_parses_back_as_a_delivery_status_report(name: str) -> None:
    req, status = CASES[name]
    msg = parse(notice_for(req))

    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@relay.example.com>"
    assert msg["To"] == SENDER
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<order-1042@example.com>"
    assert msg["References"] == "<order-1042@example.com>"
    assert msg["Message-ID"] == "<notice-1@relay.example.com>"
    assert msg["Date"].datetime == NOW
    assert msg["Subject"].endswith(": Your order 1042 has shipped")
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    parts = parts_of(msg)

    per_message, per_recipient = parts["message/delivery-status"].get_payload()
    assert per_message["Reporting-MTA"] == "dns; relay.example.com"
    assert per_message["Arrival-Date"] == "Tue, 24 Nov 2026 03:57:31 +0000"
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == status
    assert per_recipient["Last-Attempt-Date"] == "Tue, 24 Nov 2026 03:57:34 +0000"
    assert per_recipient["X-SES-Relay-Reason"] == req.reason
    diagnostic = " ".join(str(per_recipient["Diagnostic-Code"]).split())
    assert re.match(r"^(smtp|x-ses); \S", diagnostic), diagnostic

    original = HeaderParser().parsestr(parts["text/rfc822-headers"].get_content())
    assert original["Subject"] == "Your order 1042 has shipped"
    assert original["Message-ID"] == "<order-1042@example.com>"

    text = parts["text/plain"].get_content()
    assert "bob@example.net" in text
    assert "What happened:" in text and "What to do:" in text
    assert status in text


def test_advice_differs_by_reason() -> None:
    def text(name: str) -> str:
        body = parts_of(parse(notice_for(CASES[name][0])))["text/plain"].get_content()
        return " ".join(body.split())

    assert "The address is removed from future sends" in text("permanent_bounce")
    assert "for 30 days, until Thu, 24 Dec 2026 04:04:31 +0000" in text("permanent_bounce")
    assert "The address does not exist." in text("permanent_bounce_noemail")
    assert "with no expiry" in text("permanent_bounce_noemail")
    assert "reduce it" in text("message_too_large")
    assert "was not suppressed" in text("message_too_large")
    assert "Remove the attachment" in text("message_rejected_attachment")
    assert "DMARC/SPF/DKIM or reputation" in text("sender_at_fault")
    assert "check your domain's authentication".lower() in text("sender_at_fault").lower()
    assert "Suppressed because: Permanent/NoEmail" in text("suppressed")
    assert "not verified in SES" in text("send_failed")
    # message_rejected_content with a MessageTooLarge subtype gets the size advice too
    too_large = make_request("message_rejected_content", bounce_subtype="MessageTooLarge")
    assert "reduce it" in parts_of(parse(notice_for(too_large)))["text/plain"].get_content()


def test_output_is_deterministic_ascii_crlf_with_short_lines() -> None:
    for req, _ in CASES.values():
        data = notice_for(req)
        assert data == notice_for(req)
        assert data.isascii()
        assert b"\n" not in data.replace(b"\r\n", b"")
        assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_without_optional_fields_status_defaults_and_headers_are_omitted() -> None:
    req = make_request(
        "permanent_bounce", original_message_id=None, original_subject=None, message_class=None
    )
    msg = parse(notice_for(req))
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["In-Reply-To"] is None and msg["References"] is None
    _, per_recipient = parts_of(msg)["message/delivery-status"].get_payload()
    assert per_recipient["Status"] == "5.0.0"
    assert per_recipient["Diagnostic-Code"] is None


@pytest.mark.parametrize("bad_status", ["5.1", "2.0.0", "550", "5.1.1 user unknown", ""])
def test_invalid_status_falls_back_to_the_reasons_default(bad_status: str) -> None:
    msg = parse(notice_for(make_request("sender_at_fault", status=bad_status)))
    _, per_recipient = parts_of(msg)["message/delivery-status"].get_payload()
    assert per_recipient["Status"] == "5.7.1"


def test_untyped_diagnostic_gets_a_type_and_typed_keeps_its_own() -> None:
    untyped = parse(notice_for(make_request("permanent_bounce", diagnostic="550 5.1.1 unknown")))
    typed = parse(notice_for(make_request("send_failed", diagnostic="SMTP;  550 5.7.1 nope")))
    assert parts_of(untyped)["message/delivery-status"].get_payload()[1]["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 unknown"
    )
    assert parts_of(typed)["message/delivery-status"].get_payload()[1]["Diagnostic-Code"] == (
        "smtp; 550 5.7.1 nope"
    )


def test_hostile_subject_and_diagnostic_cannot_inject_headers_or_fields() -> None:
    req = make_request(
        "permanent_bounce",
        original_subject="hi\r\nBcc: victim@example.org",
        diagnostic="smtp; 550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@y",
    )
    data = notice_for(req)
    msg = parse(data)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Undelivered Mail Returned to Sender: hi Bcc: victim@example.org"
    blocks = parts_of(msg)["message/delivery-status"].get_payload()
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert blocks[1].get_all("Final-Recipient") == ["rfc822; bob@example.net"]


def test_non_ascii_subject_and_diagnostic() -> None:
    req = make_request(
        "permanent_bounce",
        original_subject="Bestätigung Ihrer Bestellung",
        diagnostic="smtp; 550 Empfänger unbekannt",
    )
    data = notice_for(req)
    assert data.isascii()
    msg = parse(data)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender: Bestätigung Ihrer Bestellung"
    parts = parts_of(msg)
    assert "Empfänger unbekannt" in parts["text/plain"].get_content()
    # DSN fields are not MIME-encoded (RFC 3464): non-ASCII becomes "?"
    assert (
        parts["message/delivery-status"].get_payload()[1]["Diagnostic-Code"]
        == "smtp; 550 Empf?nger unbekannt"
    )


def test_original_headers_are_cut_at_the_body_and_bounded() -> None:
    with_body = ORIGINAL_HEADERS + "\r\nSECRET BODY LINE\r\n"
    msg = parse(notice_for(make_request("permanent_bounce", original_headers=with_body)))
    assert "SECRET BODY LINE" not in parts_of(msg)["text/rfc822-headers"].get_content()

    huge = ORIGINAL_HEADERS + "".join(f"X-Filler-{i}: {'x' * 70}\r\n" for i in range(5000))
    data = notice_for(make_request("permanent_bounce", original_headers=huge))
    assert 64 * 1024 < len(data) < 80 * 1024
    assert parse(data).get_content_type() == "multipart/report"


def test_boundary_avoids_text_already_in_a_part() -> None:
    first = notice_for(make_request("permanent_bounce"))
    boundary = parse(first).get_boundary()
    assert boundary
    tricky = ORIGINAL_HEADERS + f"X-Trap: --{boundary}\r\n"
    second = parse(notice_for(make_request("permanent_bounce", original_headers=tricky)))
    assert second.get_boundary() != boundary
    assert len(list(second.iter_parts())) == 3
    assert f"--{boundary}" in parts_of(second)["text/rfc822-headers"].get_content()


def test_notice_sender_with_a_display_name_is_kept() -> None:
    data = compose(
        make_request("reject"),
        notice_sender="Example Postmaster <bounces@relay.example.com>",
        reporting_mta=MTA,
        now=NOW,
        message_id="n@x",
    )
    msg = parse(data)
    assert msg["From"] == "Example Postmaster <bounces@relay.example.com>"
    assert msg["Message-ID"] == "<n@x>"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"notice_sender": "not an address"}, "notice_sender"),
        ({"notice_sender": ""}, "notice_sender"),
        ({"reporting_mta": "relay example"}, "reporting_mta"),
        ({"reporting_mta": ""}, "reporting_mta"),
        ({"message_id": "<two words@x>"}, "Message-ID"),
        ({"message_id": ""}, "Message-ID"),
        ({"now": datetime(2026, 1, 1)}, "naive"),
    ],
)
def test_compose_refuses_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "notice_sender": NOTICE_SENDER,
        "reporting_mta": MTA,
        "now": NOW,
        "message_id": "<n@x>",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compose(make_request("reject"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("sender", ["", "<>", "  "])
def test_compose_refuses_the_null_sender(sender: str) -> None:
    with pytest.raises(ValueError, match="null envelope sender"):
        notice_for(make_request("reject", original_sender=sender))


def test_request_refuses_unknown_reason_and_naive_times() -> None:
    with pytest.raises(ValueError, match="unknown notice reason 'complaint'"):
        make_request("complaint")
    with pytest.raises(ValueError, match="arrival_date is a naive datetime"):
        make_request("reject", arrival_date=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="last_attempt is a naive datetime"):
        make_request("reject", last_attempt=datetime(2026, 1, 1))


# --- when not to notify --------------------------------------------------------------------

HEADERS = "From: sender@example.com\r\nSubject: hi\r\n"


@pytest.mark.parametrize(
    ("sender", "headers", "expected"),
    [
        (SENDER, ORIGINAL_HEADERS, None),
        ("<sender@example.com>", HEADERS, None),
        ("", HEADERS, "null envelope sender"),
        ("<>", HEADERS, "null envelope sender"),
        ("MAILER-DAEMON@example.com", HEADERS, "mail system address"),
        ("postmaster@example.com", HEADERS, "mail system address"),
        ("Double-Bounce@example.com", HEADERS, "mail system address"),
        (SENDER, HEADERS + "Auto-Submitted: auto-replied\r\n", "auto-submitted"),
        (SENDER, HEADERS + "auto-submitted: Auto-Generated\r\n", "auto-submitted"),
        (SENDER, HEADERS + 'Auto-Submitted: auto-notified; owner-email="a@b"\r\n', "auto-submitted"),
        (SENDER, HEADERS + "Auto-Submitted:\r\n auto-replied\r\n", "auto-submitted"),
        (SENDER, HEADERS + "Auto-Submitted: no\r\n", None),
        (SENDER, HEADERS + "Auto-Submitted: No ; comment\r\n", None),
        (
            SENDER,
            HEADERS + 'Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="b"\r\n',
            "report-type=delivery-status",
        ),
        (
            SENDER,
            HEADERS + "Content-Type: Multipart/Report; report-type=disposition-notification; boundary=b\r\n",
            "report-type=disposition-notification",
        ),
        (SENDER, HEADERS + "Content-Type: multipart/mixed; boundary=b\r\n", None),
        # Delivery reports are owed to list and bulk senders too (see should_notify).
        (SENDER, HEADERS + "Precedence: bulk\r\n", None),
        (SENDER, HEADERS + "Precedence: list\r\nList-Id: <news.example.com>\r\n", None),
        (SENDER, "", None),
        (SENDER, "this is not a header block\r\n", None),
    ],
)
def test_should_notify(sender: str, headers: str, expected: str | None) -> None:
    why = should_notify(make_request("permanent_bounce", original_sender=sender, original_headers=headers))
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why


def test_never_a_notice_about_our_own_notice() -> None:
    notice = notice_for(CASES["permanent_bounce"][0])
    header_block = notice.split(b"\r\n\r\n", 1)[0].decode()
    about_notice = make_request(
        "permanent_bounce", original_sender="someone@example.org", original_headers=header_block
    )
    assert "auto-submitted" in (should_notify(about_notice) or "")


def test_suppression_note() -> None:
    assert "with no expiry" in suppression_note(None, now=NOW)
    assert "for 1 hour, until Tue, 24 Nov 2026 05:04:31 +0000" in suppression_note(
        NOW + timedelta(hours=1), now=NOW
    )
    assert "for the 'list' class for 7 days" in suppression_note(
        NOW + timedelta(days=7, seconds=-2), now=NOW, message_class="list"
    )
    assert "for 45 seconds" in suppression_note(NOW + timedelta(seconds=45), now=NOW)
    with pytest.raises(ValueError, match="aware"):
        suppression_note(datetime(2026, 1, 1), now=NOW)
