"""Notice delivery against real mailboxes: Maildirs read back with `mailbox.Maildir`,
aiosmtpd LMTP and SMTP servers on 127.0.0.1 (and a unix socket), STARTTLS with a
throw-away certificate, and hostile addresses (the route table's parsing: tests/unit/test_mailboxes.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import mailbox
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from feedback.notices.compose import NoticeRequest, compose, should_notify
from feedback.notices.mailboxes import (
    DeliveryError,
    Route,
    deliver,
    deliver_lmtp,
    deliver_maildir,
    deliver_smtp,
    maildir_path,
    parse_route,
)
from tests.conftest import free_port
from tests.support.security import make_cert

NOTICE = (
    b"From: Mail Delivery System <MAILER-DAEMON@relay.example.com>\r\n"
    b"To: sender@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"Message-ID: <notice-1@relay.example.com>\r\n"
    b"\r\n"
    b"Your message could not be delivered.\r\n"
    b".leading dot survives dot-stuffing\r\n"
)
SENDER = "sender@example.com"
NOTICE_SENDER = "Mail Delivery System <MAILER-DAEMON@relay.example.com>"


# --- servers ------------------------------------------------------------------------------


class Recorder:
    """An aiosmtpd handler that keeps what it accepts and can answer with a scripted reply."""

    def __init__(self, rcpt_reply: str | None = None, data_reply: str | None = None) -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.received: list[tuple[str, list[str], bytes]] = []
        self.tls: list[bool] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        self.received.append((envelope.mail_from or "", list(envelope.rcpt_tos), content))
        self.tls.append(session.ssl is not None)
        return "250 2.0.0 delivered"


class LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


class LMTPUnixController(UnixSocketController):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


class Credentials:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (self.user, self.password)
        return AuthResult(success=ok, handled=False)


@contextmanager
def running(controller: Controller | UnixSocketController) -> Iterator[None]:
    controller.start()
    try:
        yield
    finally:
        controller.stop()


@pytest.fixture
def lmtp() -> Iterator[tuple[Recorder, int]]:
    handler, port = Recorder(), free_port()
    with running(LMTPController(handler, hostname="127.0.0.1", port=port)):
        yield handler, port


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    handler, port = Recorder(), free_port()
    with running(Controller(handler, hostname="127.0.0.1", port=port)):
        yield handler, port


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the same helper the AUTH tests use)."""
    cert = make_cert(tmp_path)
    return cert.cert, cert.key


def read_maildir(path: Path) -> list[bytes]:
    box = mailbox.Maildir(path, create=False)
    return [box.get_bytes(key) for key in box.keys()]


# --- Maildir --------------------------------------------------------------------------------


def test_default_maildir_route_files_the_notice_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(
        deliver(
            parse_route("maildir"),
            notice_sender=NOTICE_SENDER,
            recipient="Sender@Example.com",
            message=NOTICE,
            data_dir=data_dir,
        )
    )
    box = data_dir / "mailboxes" / "sender@example.com"
    assert len(list((box / "new").iterdir())) == 1
    (stored,) = read_maildir(box)
    assert b"\r\n" not in stored  # local files use LF, as local delivery agents write them
    msg = message_from_bytes(stored, policy=policy.default)
    assert msg["Return-Path"] == "<>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert b"\n.leading dot survives" in stored


def test_maildir_template_with_placeholders_and_repeated_delivery(tmp_path: Path) -> None:
    route = parse_route(f"maildir:{tmp_path}/mail/{{domain}}/{{local}}/Maildir")
    for _ in range(3):
        asyncio.run(
            deliver(
                route, notice_sender=NOTICE_SENDER, recipient=SENDER, message=NOTICE, data_dir=tmp_path / "d"
            )
        )
    assert len(read_maildir(tmp_path / "mail" / "example.com" / "sender" / "Maildir")) == 3


def test_relative_template_is_under_the_data_dir(tmp_path: Path) -> None:
    route = parse_route("maildir:notices/{domain}")
    assert maildir_path(route, SENDER, tmp_path) == tmp_path / "notices" / "example.com"
    assert maildir_path(parse_route("maildir:{address}"), SENDER, tmp_path) == tmp_path / SENDER
    assert (
        maildir_path(parse_route("maildir"), "A@EXAMPLE.com", tmp_path)
        == tmp_path / "mailboxes" / "a@example.com"
    )


def test_deliver_maildir_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    deliver_maildir(target, NOTICE)
    assert len(read_maildir(target)) == 1


def test_unwritable_maildir_is_a_temporary_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DeliveryError) as caught:
        deliver_maildir(blocker / "box", NOTICE)
    assert caught.value.temporary is True
    assert "Maildir" in str(caught.value)


@pytest.mark.parametrize(
    ("template", "address"),
    [
        ("{address}", "../../etc@example.com"),
        ("{local}", "a/../../../etc@example.com"),
        ("{local}", "../x@example.com"),
        ("mail/{local}/Maildir", "..@example.com"),
        ("mail/{local}", ".hidden@example.com"),
        ("mail/{domain}", "a@example.com/.."),
        ("/srv/mail/{address}", "evil/../../root@example.com"),
        ("mail/{local}", "x\\..\\..@example.com"),
    ],
)
def test_addresses_cannot_escape_the_maildir_base(tmp_path: Path, template: str, address: str) -> None:
    route = parse_route(f"maildir:{template}")
    with pytest.raises(ValueError, match="refusing Maildir path"):
        maildir_path(route, address, tmp_path)
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(
            deliver(route, notice_sender=NOTICE_SENDER, recipient=address, message=NOTICE, data_dir=tmp_path)
        )
    assert caught.value.temporary is False  # retrying cannot make the address safe
    assert not list(tmp_path.rglob("new"))


@pytest.mark.parametrize("address", ["", "no-at-sign", "@example.com", "user@"])
def test_maildir_path_refuses_non_addresses(tmp_path: Path, address: str) -> None:
    with pytest.raises(ValueError, match="not an address"):
        maildir_path(parse_route("maildir"), address, tmp_path)


# --- LMTP -----------------------------------------------------------------------------------


def test_lmtp_delivery_uses_the_null_sender(lmtp: tuple[Recorder, int], tmp_path: Path) -> None:
    handler, port = lmtp
    asyncio.run(
        deliver(
            parse_route(f"lmtp://127.0.0.1:{port}"),
            notice_sender=NOTICE_SENDER,
            recipient=SENDER,
            message=NOTICE,
            data_dir=tmp_path,
        )
    )
    ((mail_from, rcpts, content),) = handler.received
    assert mail_from in ("", "<>")
    assert rcpts == [SENDER]
    assert content.replace(b"\r\n", b"\n") == NOTICE.replace(b"\r\n", b"\n")


def test_lmtp_down_is_temporary_then_delivered_when_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    route = parse_route(f"lmtp://127.0.0.1:{port}")

    def attempt() -> None:
        asyncio.run(
            deliver(
                route,
                notice_sender=NOTICE_SENDER,
                recipient=SENDER,
                message=NOTICE,
                data_dir=tmp_path,
                timeout=5,
            )
        )

    with pytest.raises(DeliveryError) as caught:
        attempt()
    assert caught.value.temporary is True
    assert f"127.0.0.1:{port}" in str(caught.value)

    handler = Recorder()
    with running(LMTPController(handler, hostname="127.0.0.1", port=port)):
        attempt()
    assert [rcpts for _, rcpts, _ in handler.received] == [[SENDER]]


@pytest.mark.parametrize(
    ("rcpt_reply", "data_reply", "temporary", "code"),
    [
        ("550 5.1.1 no such mailbox", None, False, 550),
        ("452 4.2.2 mailbox full", None, True, 452),
        (None, "552 5.2.2 over quota", False, 552),
        (None, "451 4.3.0 try later", True, 451),
    ],
)
def test_lmtp_replies_decide_temporary_or_final(
    lmtp: tuple[Recorder, int], rcpt_reply: str | None, data_reply: str | None, temporary: bool, code: int
) -> None:
    handler, port = lmtp
    handler.rcpt_reply, handler.data_reply = rcpt_reply, data_reply
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(deliver_lmtp("127.0.0.1", port, "", SENDER, NOTICE))
    assert caught.value.temporary is temporary
    assert caught.value.code == code
    assert str(code) in str(caught.value)
    assert handler.received == []


def test_lmtp_over_a_unix_socket(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="lmtp"))  # AF_UNIX paths are limited to ~100 bytes
    try:
        socket_path = short / "lmtp.sock"
        handler = Recorder()
        route = parse_route(f"lmtp://{socket_path}")
        assert route == Route(kind="lmtp", target=str(socket_path))
        with running(LMTPUnixController(handler, unix_socket=socket_path)):
            asyncio.run(
                deliver(
                    route, notice_sender=NOTICE_SENDER, recipient=SENDER, message=NOTICE, data_dir=tmp_path
                )
            )
        assert [rcpts for _, rcpts, _ in handler.received] == [[SENDER]]
    finally:
        shutil.rmtree(short, ignore_errors=True)


# --- SMTP -----------------------------------------------------------------------------------


def test_smtp_delivery_uses_the_null_sender(smtp: tuple[Recorder, int], tmp_path: Path) -> None:
    handler, port = smtp
    asyncio.run(
        deliver(
            parse_route(f"smtp://127.0.0.1:{port}"),
            notice_sender=NOTICE_SENDER,
            recipient=SENDER,
            message=NOTICE,
            data_dir=tmp_path,
        )
    )
    ((mail_from, rcpts, content),) = handler.received
    assert mail_from in ("", "<>")
    assert rcpts == [SENDER]
    assert b"Subject: Undelivered Mail Returned to Sender" in content


def test_smtp_550_is_final_and_450_temporary(smtp: tuple[Recorder, int]) -> None:
    handler, port = smtp
    for reply, temporary in (("550 5.7.1 relaying denied", False), ("450 4.7.1 greylisted", True)):
        handler.rcpt_reply = reply
        with pytest.raises(DeliveryError) as caught:
            asyncio.run(
                deliver_smtp(
                    "127.0.0.1", port, "", SENDER, NOTICE, starttls=False, username=None, password=None
                )
            )
        assert caught.value.temporary is temporary
        assert reply.split()[0] in str(caught.value)


def test_smtp_server_down_is_temporary() -> None:
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(
            deliver_smtp(
                "127.0.0.1", free_port(), "", SENDER, NOTICE, starttls=False, username=None, password=None
            )
        )
    assert caught.value.temporary is True


def test_smtp_with_starttls_and_auth(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert_file, key_file = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    handler, port = Recorder(), free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=Credentials("notices", "s3cr@t"),
        auth_require_tls=True,
    )

    def attempt(route_text: str) -> None:
        asyncio.run(
            deliver(
                parse_route(route_text),
                notice_sender=NOTICE_SENDER,
                recipient=SENDER,
                message=NOTICE,
                data_dir=tmp_path,
                timeout=5,
            )
        )

    base = f"127.0.0.1:{port}?starttls=1&cafile={cert_file}"
    with running(controller):
        attempt(f"smtp://notices:s3cr%40t@{base}")
        assert handler.tls == [True]

        with pytest.raises(DeliveryError) as wrong_password:
            attempt(f"smtp://notices:wrong@{base}")
        assert wrong_password.value.temporary is True  # a config error: retry once it is fixed
        assert wrong_password.value.code == 535

        with pytest.raises(DeliveryError) as untrusted:
            attempt(f"smtp://notices:s3cr%40t@127.0.0.1:{port}?starttls=1")  # system CAs only
        assert untrusted.value.temporary is True

        with pytest.raises(DeliveryError) as no_tls:
            attempt(f"smtp://127.0.0.1:{port}")  # server demands STARTTLS first (530)
        assert no_tls.value.temporary is True
    assert len(handler.received) == 1


def test_starttls_required_but_not_offered_is_temporary(smtp: tuple[Recorder, int]) -> None:
    _, port = smtp
    with pytest.raises(DeliveryError, match="STARTTLS") as caught:
        asyncio.run(
            deliver_smtp("127.0.0.1", port, "", SENDER, NOTICE, starttls=True, username=None, password=None)
        )
    assert caught.value.temporary is True


# --- SES ------------------------------------------------------------------------------------


def test_ses_route_uses_the_callers_sender_and_the_notice_sender_as_source(tmp_path: Path) -> None:
    calls: list[tuple[bytes, str, str]] = []

    async def ses_send(message: bytes, source: str, destination: str) -> None:
        calls.append((message, source, destination))

    asyncio.run(
        deliver(
            parse_route("ses"),
            notice_sender=NOTICE_SENDER,
            recipient="<sender@example.com>",
            message=NOTICE,
            data_dir=tmp_path,
            ses_send=ses_send,
        )
    )
    assert calls == [(NOTICE, "MAILER-DAEMON@relay.example.com", SENDER)]


def test_ses_route_without_a_sender_callable_is_a_wiring_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ses_send"):
        asyncio.run(
            deliver(
                parse_route("ses"),
                notice_sender=NOTICE_SENDER,
                recipient=SENDER,
                message=NOTICE,
                data_dir=tmp_path,
            )
        )


def test_ses_send_errors_reach_the_caller(tmp_path: Path) -> None:
    async def failing(message: bytes, source: str, destination: str) -> None:
        raise DeliveryError("Throttling", temporary=True)

    with pytest.raises(DeliveryError, match="Throttling"):
        asyncio.run(
            deliver(
                parse_route("ses"),
                notice_sender=NOTICE_SENDER,
                recipient=SENDER,
                message=NOTICE,
                data_dir=tmp_path,
                ses_send=failing,
            )
        )


def test_a_composed_notice_lands_in_the_maildir_as_a_readable_report(tmp_path: Path) -> None:
    """A notice end to end, short of the relay: compose, file, read back, parse."""
    now = dt.datetime(2026, 11, 24, 4, 4, 31, tzinfo=dt.UTC)
    req = NoticeRequest(
        reason="permanent_bounce",
        recipient="bounce@simulator.amazonses.com",
        original_sender=SENDER,
        original_headers="From: sender@example.com\r\nSubject: Hello from the sandbox\r\n",
        original_message_id="<hello@example.com>",
        original_subject="Hello from the sandbox",
        submission_id="019b5a1c2e3f4a5b6c7d",
        arrival_date=now,
        last_attempt=now,
        status="5.1.1",
        diagnostic="smtp; 550 5.1.1 user unknown",
    )
    assert should_notify(req) is None
    notice = compose(
        req,
        notice_sender="MAILER-DAEMON@relay.test",
        reporting_mta="relay.test",
        now=now,
        message_id="<n1@relay.test>",
    )
    asyncio.run(
        deliver(
            parse_route("maildir"),
            notice_sender=NOTICE_SENDER,
            recipient=SENDER,
            message=notice,
            data_dir=tmp_path,
        )
    )
    (stored,) = read_maildir(tmp_path / "mailboxes" / SENDER)
    msg = message_from_bytes(stored, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    parts = {part.get_content_type(): part for part in msg.iter_parts()}
    _, per_recipient = parts["message/delivery-status"].get_payload()
    assert per_recipient["Final-Recipient"] == "rfc822; bounce@simulator.amazonses.com"
    assert per_recipient["Status"].startswith("5.")
    assert "Subject: Hello from the sandbox" in parts["text/rfc822-headers"].get_content()
