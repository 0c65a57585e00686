"""Sample inputs shared by a topic's unit tests and its system tests."""

from __future__ import annotations

from relay.sending.ses_api import SendRequest

# X-SES-*-ARN headers as an authorised user sets them (relay/sending/sender.py spooled_arns).
ARNS = (
    "X-SES-SOURCE-ARN: arn:aws:ses:us-east-1:111111111111:identity/example.com\r\n"
    "X-SES-FROM-ARN: arn:aws:ses:us-east-1:111111111111:identity/example.com\r\n"
)


def arn_message(extra: str = ARNS) -> bytes:
    return f"From: app@example.com\r\nTo: r@example.org\r\nSubject: arn\r\n{extra}\r\nbody\r\n".encode()


# A message with a non-ASCII body, and one SendRequest carrying it (relay/sending/ses_client.py).
RAW = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"body \xe2\x9c\x93\r\n"
)


def request(**overrides: object) -> SendRequest:
    fields: dict[str, object] = {
        "raw": RAW,
        "source": "alice@example.com",
        "destinations": ("bob@example.org",),
        "configuration_set": "tx",
        "tags": (("message-class", "transactional"), ("submission-id", "S-1")),
    }
    fields.update(overrides)
    return SendRequest(**fields)  # type: ignore[arg-type]


# A message with the headers DKIM signs, oversigns and leaves alone, and an 8-bit body.
DKIM_MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <local-1@app.example.com>\r\n"
    b"Return-Path: <bounces@example.com>\r\n"
    b"Bounces-To: bounces@example.com\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"List-Unsubscribe: <https://example.com/u/1>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Mailer: app 1.0\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"the numbers are in. \xe2\x9c\x93\r\n"
)
