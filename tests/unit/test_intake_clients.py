"""Every final reply after EHLO carries an enhanced status code (relay/intake/replies.py `enhance`)."""

from __future__ import annotations

import pytest

from relay.intake import replies


@pytest.mark.parametrize(
    ("sent", "enhanced"),
    [
        ("250 OK", "250 2.0.0 Ok"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ('500 Error: command "FROB" not recognized', '500 5.5.2 Error: command "FROB" not recognized'),
        ("252 Cannot VRFY user", "252 2.0.0 Cannot VRFY user"),
        ("451 Try later", "451 4.0.0 Try later"),
        ("250 2.1.0 Sender ok", "250 2.1.0 Sender ok"),  # already has one
        ("220 relay.example.com ses-relay", "220 relay.example.com ses-relay"),  # the greeting
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("250", "250 2.0.0"),
    ],
)
def test_enhance_gives_every_final_reply_a_code(sent: str, enhanced: str) -> None:
    assert replies.enhance(sent, 1024) == enhanced
