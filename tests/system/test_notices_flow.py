"""Notices end to end: a bounce in the sandbox becomes an RFC 3464 report in the sender's mailbox."""

from __future__ import annotations

import email
import email.policy
import mailbox
import smtplib
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from tests.conftest import Relay, free_port, wait_until
from tests.support.relaydb import count_rows
from tests.support.smtp import message, send

BOUNCE = "bounce@simulator.amazonses.com"
SENDER = "sender@example.com"


def notice_box(relay: Relay, address: str = SENDER) -> list[mailbox.MaildirMessage]:
    path = relay.data_dir / "mailboxes" / address
    return list(mailbox.Maildir(path, create=False)) if path.exists() else []


def parts(raw: bytes) -> dict[str, email.message.EmailMessage]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    return {p.get_content_type(): p for p in msg.iter_parts()}


def test_sandbox_bounce_puts_a_delivery_report_in_the_senders_maildir(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    code, _ = send(relay, [BOUNCE], message("Quarterly figures"), sender=SENDER)
    assert code == 250

    new = wait_until(
        lambda: list((relay.data_dir / "mailboxes" / SENDER / "new").glob("*")) or None,
        timeout=10,
        what="a notice in the sender's Maildir",
    )
    assert len(new) == 1
    raw = new[0].read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == SENDER
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<Quarterly-figures@example.com>"
    found = parts(raw)
    status = found["message/delivery-status"].as_string()
    assert f"Final-Recipient: rfc822; {BOUNCE}" in status
    assert "Status: 5." in status
    assert "Subject: Quarterly figures" in found["text/rfc822-headers"].as_string()
    assert BOUNCE in found["text/plain"].get_content()

    listed = relay.json("notices", "list")
    assert [(n["state"], n["reason"]) for n in listed] == [("sent", "permanent_bounce")]


def test_null_sender_and_auto_submitted_originals_get_no_notice(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    code, _ = send(relay, [BOUNCE], message("from nobody"), sender="<>")
    assert code == 250
    code, _ = send(
        relay, [f"bounce+2@{BOUNCE.split('@')[1]}"], message("vacation", "Auto-Submitted: auto-replied\r\n"),
        sender=SENDER,
    )  # fmt: skip
    assert code == 250
    # Both bounce; wait for the consumer to have applied both, then for the notifier to settle.
    wait_until(lambda: len(relay.json("events", "list", "--since", "1h")) >= 4, what="both bounces applied")
    wait_until(
        lambda: all(n["state"] != "pending" for n in relay.json("notices", "list")),
        what="no notice left pending",
    )
    assert notice_box(relay) == []
    states = [(n["state"], n["last_error"]) for n in relay.json("notices", "list")]
    assert len(states) == 1 and states[0][0] == "skipped" and "auto" in states[0][1].lower()


class LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.got = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.original_content)
        self.got.set()
        return "250 2.0.0 Delivered"


def test_lmtp_notice_waits_for_the_server_and_arrives_once_it_is_up(relay_factory) -> None:
    port = free_port()
    relay = relay_factory(f'[notices]\ndefault = "lmtp://127.0.0.1:{port}"\n', sandbox=True)
    send(relay, [BOUNCE], message("lmtp please"), sender=SENDER)
    wait_until(
        lambda: any(n["attempts"] >= 1 and n["state"] == "pending" for n in relay.json("notices", "list")),
        what="a deferred notice while LMTP is down",
    )
    recorder = Recorder()
    controller = LMTPController(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # The first retry comes within RETRY_BASE_SECONDS (jittered); ask the store to make it due now.
        _make_notices_due(relay.data_dir)
        assert recorder.got.wait(15), relay.log()
    finally:
        controller.stop()
    assert len(recorder.messages) == 1
    found = parts(recorder.messages[0])
    assert BOUNCE in found["message/delivery-status"].as_string()
    wait_until(lambda: relay.json("notices", "list")[0]["state"] == "sent", what="notice settled")


def _make_notices_due(data_dir: Path) -> None:
    import sqlite3

    db = sqlite3.connect(data_dir / "relay.db", timeout=10)
    try:
        with db:
            db.execute("UPDATE notices SET next_attempt_at = '2000-01-01T00:00:00.000000Z'")
    finally:
        db.close()


def test_redelivered_bounce_does_not_make_a_second_notice(relay_factory, tmp_path: Path) -> None:
    relay = relay_factory(sandbox=True)
    send(relay, [BOUNCE], message("once only"), sender=SENDER)
    wait_until(lambda: notice_box(relay), what="the first notice")
    events = relay.json("events", "list", "--address", BOUNCE)
    bounce = next(e for e in events if e["kind"] == "bounce")
    raw = _event_raw(relay.data_dir, bounce["id"])
    again = tmp_path / "again.json"
    again.write_text(raw)
    result = relay.cli("feedback", "replay", str(again), check=True)
    assert "1 duplicate" in result.stdout
    assert count_rows(relay.data_dir, "notices") == 1
    assert len(notice_box(relay)) == 1


def _event_raw(data_dir: Path, event_id: int) -> str:
    import sqlite3

    db = sqlite3.connect(data_dir / "relay.db")
    try:
        return db.execute("SELECT raw FROM events WHERE id = ?", (event_id,)).fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("route", ["lmtp://host:port", "pigeon://x", "smtp://u:p@mail.example.com:25"])
def test_bad_notice_route_is_a_config_error(tmp_path: Path, route: str) -> None:
    from tests.conftest import run_cli

    config = tmp_path / "c.toml"
    config.write_text(f'[notices.routes]\n"example.com" = "{route}"\n')
    result = run_cli("serve", "--sandbox", data_dir=tmp_path / "d", config=config)
    assert result.returncode == 2, result.stderr
    assert "notices.routes.example.com" in result.stderr


def test_a_raw_utf8_subject_reads_right_in_submission_show_and_in_the_notice(relay_factory) -> None:
    """Postfix's sendmail passes a raw UTF-8 Subject on unchanged (8-bit octets in the header)."""
    relay = relay_factory(sandbox=True)
    subject = "Grüße aus Köln: 注文 #7"
    raw = (
        f"From: Shop <{SENDER}>\r\nTo: {BOUNCE}\r\nSubject: {subject}\r\n"
        "Message-ID: <utf8-subject@example.com>\r\n\r\nHallo.\r\n"
    ).encode()
    assert not raw.isascii()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        refused = client.sendmail(SENDER, [BOUNCE], raw)
        assert refused == {}
    [submission] = relay.json("submission", "list")
    assert submission["subject"] == subject
    assert relay.json("submission", "show", submission["id"])["subject"] == subject

    [notice] = wait_until(lambda: notice_box(relay), timeout=15, what="a notice in the sender's Maildir")
    msg = email.message_from_bytes(notice.as_bytes(), policy=email.policy.default)
    assert str(msg["Subject"]) == f"Undelivered Mail Returned to Sender: {subject}"
    found = parts(notice.as_bytes())
    assert f"Subject:    {subject}" in found["text/plain"].get_content()
    assert f"Subject: {subject}" in found["text/rfc822-headers"].get_content()
    assert "\ufffd" not in msg.as_string()


def test_latin1_octets_that_are_not_utf8_are_read_as_latin1(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    raw = b"From: <app@example.com>\r\nTo: <a@example.org>\r\nSubject: caf\xe9 cr\xe8me\r\n\r\nx\r\n"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        assert client.sendmail("app@example.com", ["a@example.org"], raw) == {}
    [submission] = relay.json("submission", "list")
    assert submission["subject"] == "café crème"
