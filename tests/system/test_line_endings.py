"""Bare LF line endings from trusted clients: read as Postfix reads them, normalised, un-stuffed.

Real clients against a real `ses-relay serve --sandbox`: smtplib (which sends
`msg.as_bytes()` with LF line ends and dot-stuffs after every LF) for what
applications do, a raw socket for what an attacker does. The sandbox's Maildir copy
is the message as it would be handed to SES. The reading rules themselves are
table-tested in tests/unit/test_line_endings.py.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from relay.intake import inputcheck
from tests.conftest import Relay, wait_until
from tests.support.relaydb import count_rows
from tests.support.smtp import Conversation, envelope


def sandbox_copy(relay: Relay, address: str) -> bytes:
    """The one copy the sandbox delivered to `address`, as bytes (its Return-Path line dropped)."""
    new = relay.data_dir / "sandbox" / address / "new"
    copies: list[Path] = wait_until(
        lambda: list(new.glob("*")) if new.exists() else [], what=f"the copy to {address}"
    )
    assert len(copies) == 1, copies
    data = copies[0].read_bytes()
    return data.split(b"\r\n", 1)[1] if data.startswith(b"Return-Path:") else data


def lf_message(to: str, body: str, subject: str = "lf") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def sendmail(relay: Relay, to: str, raw: bytes) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        return client.sendmail("app@example.com", [to], raw)


# -- applications: smtplib.sendmail(msg.as_bytes()) ------------------------------------------


def test_lf_only_message_with_a_5_kb_body_is_accepted_normalised_and_unstuffed(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    lines = [f"line {i:03d} of a body made of short lines" for i in range(150)]
    body = "\n".join([*lines[:75], ".dot line", "..two dots", ".", *lines[75:]]) + "\n"
    raw = lf_message("lf@example.org", body).as_bytes()
    assert b"\r" not in raw and len(raw) > 5000 and max(map(len, raw.split(b"\n"))) < 80

    assert sendmail(relay, "lf@example.org", raw) == {}  # 250 for the one recipient

    got = sandbox_copy(relay, "lf@example.org")
    # Every line end CRLF, nothing else changed; smtplib ends the data with CRLF after the
    # message's own LF, so there is one empty line more (Postfix stores the same).
    assert got == raw.replace(b"\n", b"\r\n") + b"\r\n"
    assert b"\r\n.dot line\r\n..two dots\r\n.\r\n" in got  # un-stuffed: as Postfix delivers it
    assert not inputcheck.has_bare_line_endings(got)
    assert relay.wait_log("(bare line endings normalised)")


def test_mixed_line_endings_in_headers_and_body(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    raw = (
        b"From: App <app@example.com>\r\nTo: mixed@example.org\nSubject: mixed\r\n"
        b"Message-ID: <mixed@example.com>\n\nfirst\r\n.second\nthird\r\n\n" + b"x" * 900 + b"\nlast\n"
    )
    assert sendmail(relay, "mixed@example.org", raw) == {}
    got = sandbox_copy(relay, "mixed@example.org")
    # smtplib stuffed ".second" (after a CRLF) and the relay un-stuffed it; the last CRLF is smtplib's.
    assert got == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    headers = got.split(b"\r\n\r\n", 1)[0]
    assert headers.split(b"\r\n") == [
        b"From: App <app@example.com>",
        b"To: mixed@example.org",
        b"Subject: mixed",
        b"Message-ID: <mixed@example.com>",
    ]


def test_line_length_is_judged_on_the_normalised_line(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    head = "From: app@example.com\nSubject: {}\n\n"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        # 998 octets + LF is 1000 with CRLF: the longest line RFC 5321 allows.
        fits = (head.format("fits") + "y" * 998 + "\n").encode()
        assert client.sendmail("app@example.com", ["fits@example.org"], fits) == {}
        # 999 + LF is 1000 octets as sent, 1001 as stored: too long.
        for length in (999, 5000):
            raw = (head.format("long") + "z" * length + "\nshort\n").encode()
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("app@example.com", ["long@example.org"], raw)
            assert refused.value.smtp_code == 500
            assert refused.value.smtp_error.startswith(b"5.5.2 Line too long: at most 1000 octets")
        # The session is still in step after the refusals.
        after = (head.format("after") + "ok\n").encode()
        assert client.sendmail("app@example.com", ["after@example.org"], after) == {}
    assert sandbox_copy(relay, "fits@example.org").endswith(b"\r\n\r\n" + b"y" * 998 + b"\r\n\r\n")
    assert sandbox_copy(relay, "after@example.org").endswith(b"\r\n\r\nok\r\n\r\n")
    assert count_rows(relay.data_dir, "submissions") == 2
    assert relay.wait_log("refused DATA from 127.0.0.1: 500 5.5.2 Line too long", 2)


def test_reject_mode_still_refuses_bare_line_endings(relay_factory: Any) -> None:
    relay = relay_factory('[limits]\nbare_line_endings = "reject"\n', sandbox=True)
    body = "\n".join(f"short line {i}" for i in range(400)) + "\n"
    raw = lf_message("r@example.org", body).as_bytes()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        sendmail(relay, "r@example.org", raw)
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.6.0 ")
    # Bare LF only in the body (the headers end in CRLF): the body rule refuses it.
    headers, _, body_bytes = raw.partition(b"\n\n")
    raw = headers.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body_bytes
    with pytest.raises(smtplib.SMTPDataError) as refused:
        sendmail(relay, "r@example.org", raw)
    assert refused.value.smtp_code == 550 and b"bare CR or LF" in refused.value.smtp_error
    assert sendmail(relay, "r@example.org", raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")) == {}
    assert count_rows(relay.data_dir, "submissions") == 1


# -- attackers: a fake end of data -------------------------------------------------------------


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n"], ids=["lf-lf", "crlf-lf", "lf-crlf"])
def test_a_dot_line_touching_a_bare_lf_does_not_end_data(relay_factory: Any, fake_end: bytes) -> None:
    """An LF-only body over 1,000 octets (read line by line now) with a fake end in it, then
    commands: one message, which holds the commands as text; only <CRLF>.<CRLF> ended it."""
    relay = relay_factory(sandbox=True)
    body = b"".join(b"padding line %03d\n" % i for i in range(80))
    with Conversation(relay) as conv:
        envelope(conv, ["victim@example.org"])
        conv.send(
            b"From: app@example.com\nSubject: smuggle\n\n" + body + b"end of part one" + fake_end
            + b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<smuggled@example.org>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nNO SMUGGLING\r\n.\r\n"
        )  # fmt: skip
        assert conv.reply().startswith(b"250 2.0.0 Ok: queued as ")
        assert conv.cmd(b"NOOP").startswith(b"250 2.0.0")  # no reply was waiting: nothing else ran
        assert conv.cmd(b"QUIT").startswith(b"221")
    got = sandbox_copy(relay, "victim@example.org")
    assert b"end of part one\r\nMAIL FROM:<ceo@example.com>\r\n" in got  # the fake "." dropped
    assert b"\r\n.\r\n" not in got and got.endswith(b"NO SMUGGLING\r\n")
    assert count_rows(relay.data_dir, "submissions") == 1
    assert not (relay.data_dir / "sandbox" / "smuggled@example.org").exists()
