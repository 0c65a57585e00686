"""Log filters, the JSON formatter and secret redaction, in process (pure): ordinary words included."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from relay.logredact import RedactSecrets, redact
from relay.logsetup import CHATTY_LOGGERS, DemoteChatter, JsonFormatter, configure

# -- the pure parts --------------------------------------------------------------------------------


def test_demote_chatter_keeps_warnings_and_drops_info_unless_debug() -> None:
    logger = logging.getLogger("tests.chatter")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(DemoteChatter())
    logger.propagate = False
    try:
        logger.setLevel(logging.INFO)
        logger.info("every command")
        logger.warning("unrecognised command")
        logger.setLevel(logging.DEBUG)
        logger.info("now shown")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["WARNING unrecognised command", "DEBUG now shown"]


class Built(logging.Handler):
    """Every record that reaches the logger's handlers, i.e. every record that was built."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("info", ["WARNING"]),
        ("warning", ["WARNING"]),
        ("debug", ["DEBUG", "WARNING"]),
        ("DEBUG", ["DEBUG", "WARNING"]),
    ],
)
def test_aiosmtpd_protocol_records_are_only_built_at_debug(level: str, kept: list[str]) -> None:
    root, chatty = logging.getLogger(), logging.getLogger(CHATTY_LOGGERS[0])
    root_level = root.level
    built = Built()
    chatty.addHandler(built)
    try:
        root.setLevel(level.upper())  # as configure's basicConfig sets it when it adds the handler
        configure(level)
        chatty.info("%r recip: %s", ("127.0.0.1", 1), "a@example.com")
        chatty.warning("%r unrecognised: %s", ("127.0.0.1", 1), "FROB")
    finally:
        chatty.removeHandler(built)
        chatty.setLevel(logging.NOTSET)
        root.setLevel(root_level)
    assert [r.levelname for r in built.records] == kept


def test_json_formatter_carries_the_exception() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("ses_relay.x", logging.ERROR, __file__, 1, "failed %s", ("sending",), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["message"], entry["level"], entry["logger"]) == ("failed sending", "ERROR", "ses_relay.x")
    assert "Traceback" in entry["exception"] and "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "refused MAIL from 10.0.0.5: the listener requires AUTH and not authenticated",
        "listener 0.0.0.0:587 requires AUTH but users.json has no users yet",
        "locking 10.0.0.5 out of AUTH for 900 s",
        "AUTH is only offered over TLS",
        "Available AUTH mechanisms: LOGIN(builtin) PLAIN(builtin)",
        "user alice may not use AUTH with this sender",
        "password reset for user bob",
        "the session token expired; the secret is in the manager",
        "see https://docs.example.com/a:b@c for the passwords page",
        "accepted 01ab from <app@example.com> client=127.0.0.1 class=transactional (default)",
    ],
)
def test_redaction_leaves_ordinary_words_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AUTH PLAIN AGFsaWNlAGh1bnRlcjI=", "AUTH PLAIN ********"),
        ("auth plain AGFsaWNlAGh1bnRlcjI=", "auth plain ********"),
        ("b'AUTH LOGIN YWxpY2U='", "b'AUTH LOGIN ********'"),
        ("AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlcg==", "AUTH XOAUTH2 ********"),
        ("auth scram-sha-256 biwsbj1hbGljZSxyPWZ5a28=", "auth scram-sha-256 ********"),
        ("AUTH CUSTOM-MECH c2VjcmV0", "AUTH CUSTOM-MECH ********"),
        ("password: hunter2", "password: ********"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = ********"),
        ("X-Amz-Security-Token: IQoJb3JpZ2luX2VjE", "X-Amz-Security-Token: ********"),
        ("lmtp via smtp://u:pw123456@mx.example:25", "lmtp via smtp://u:********@mx.example:25"),
        # Any case, and non-ASCII text that the regular expressions' case folding still matches
        ("SessionToken=abcdefgh", "SessionToken=********"),
        ("SECRETACCESSKEY: abcdefgh", "SECRETACCESSKEY: ********"),
        ("HTTPS://u:pw123456@h.example", "HTTPS://u:********@h.example"),
        ("pa\u017f\u017fword: hunter2", "pa\u017f\u017fword: ********"),
    ],
)
def test_redaction_masks_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"auth login dXNlcg==", "b'auth login ********'"),  # any case, any mechanism name
        (b"AUTH FOO c2VjcmV0", "b'AUTH FOO ********'"),
        (b"AUTH PLAIN", "b'AUTH PLAIN'"),  # no argument: nothing to hide
        (b"MAIL FROM:<a@example.com>", "b'MAIL FROM:<a@example.com>'"),
        (b"aHVudGVyMg==", "'[client line redacted: not an SMTP command]'"),
    ],
)
def test_client_lines_logged_by_aiosmtpd(line: bytes, shown: str) -> None:
    peer = ("10.0.0.5", 1)
    record = logging.LogRecord("mail.log", logging.DEBUG, __file__, 1, "%r >> %r", (peer, line), None)
    assert RedactSecrets().filter(record)
    assert record.getMessage() == f"('10.0.0.5', 1) >> {shown}"
