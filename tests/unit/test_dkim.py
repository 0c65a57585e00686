"""DKIM signing refuses a key it cannot use, naming the domain (no key on disk needed)."""

from __future__ import annotations

import pytest

from relay.sending.dkim import DkimError, sign

MESSAGE = (
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


@pytest.mark.parametrize(
    "bad_key",
    [b"", b"not a key", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"],
)
def test_unusable_key_is_a_dkim_error(bad_key: bytes) -> None:
    with pytest.raises(DkimError, match=r"example\.com"):
        sign(MESSAGE, "example.com", "s1", bad_key)
