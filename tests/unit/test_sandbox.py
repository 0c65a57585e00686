"""The sandbox stand-in's pure parts: the simulator table, SES-shaped ids and times, safe paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.sandbox.stand_in import (
    DELIVERED,
    GENERAL_DIAGNOSTIC,
    SUPPRESSION_DIAGNOSTIC,
    Bounce,
    Outcome,
    mailbox_dir,
    parse_headers,
    ses_id,
    ses_timestamp,
    simulate,
)

SIM = "simulator.amazonses.com"
MESSAGE_ID = re.compile(
    r"^0100[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-000000$"
)

HARD = Outcome(False, Bounce("Permanent", "General", "5.1.1", GENERAL_DIAGNOSTIC))
LISTED = Outcome(False, Bounce("Permanent", "OnAccountSuppressionList", "5.1.1", SUPPRESSION_DIAGNOSTIC))
COMPLAINS = Outcome(True, complaint="abuse")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (f"success@{SIM}", DELIVERED),
        (f"bounce@{SIM}", HARD),
        (f"bounce+ticket-42@{SIM}", HARD),
        (f"BOUNCE@{SIM.upper()}", HARD),
        (f"  <bounce@{SIM}>  ", HARD),
        (f"Tester <bounce+x@{SIM}>", HARD),
        (f"bounce@{SIM}.", HARD),
        (f"ooto@{SIM}", DELIVERED),
        (f"complaint@{SIM}", COMPLAINS),
        (f"complaint+a+b@{SIM}", COMPLAINS),
        (f"suppressionlist@{SIM}", LISTED),
        (f"suppressionlist+x@{SIM}", LISTED),
        (f"nobody@{SIM}", DELIVERED),  # unknown simulator mailbox: delivered
        (f"xbounce@{SIM}", DELIVERED),
        (f"bouncex@{SIM}", DELIVERED),
        ("bounce@example.com", DELIVERED),  # only the simulator domain is special
        ("complaint@sub.simulator.amazonses.com", DELIVERED),
        ("bounce@simulator.amazonses.com.example", DELIVERED),
        ("user@example.com", DELIVERED),
        ("no-at-sign", DELIVERED),
        ("", DELIVERED),
    ],
)
def test_simulate_table(address: str, expected: Outcome) -> None:
    assert simulate(address) == expected


def test_ids_and_timestamps_look_like_ses() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert ses_timestamp(when) == "2024-01-02T03:04:05.678Z"
    assert ses_timestamp(when.astimezone(UTC).replace(tzinfo=UTC)) == "2024-01-02T03:04:05.678Z"
    first = ses_id(when)
    assert MESSAGE_ID.match(first)
    assert first[4:16] == f"{int(when.timestamp() * 1000):012x}"
    assert ses_id(when) != first
    with pytest.raises(ValueError):
        ses_timestamp(datetime(2024, 1, 1))  # naive


def test_mailbox_dir_stays_inside_root(tmp_path: Path) -> None:
    assert mailbox_dir(tmp_path, " User@Example.COM ") == tmp_path / "user@example.com"
    assert mailbox_dir(tmp_path, "a/b@example.com") == tmp_path / "a%2Fb@example.com"
    assert mailbox_dir(tmp_path, "a%2Fb@example.com") != mailbox_dir(tmp_path, "a/b@example.com")


def test_parse_headers_unfolds_decodes_and_truncates() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n"
        b"To: A <a@example.com>, b@example.com\r\n"
        b"Subject: =?utf-8?q?h=C3=A9llo?=\r\n world\r\n"
        b"X-Latin1: caf\xe9\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n"
    )
    headers, truncated, common = parse_headers(raw)
    assert not truncated
    assert headers[2] == {"name": "Subject", "value": "=?utf-8?q?h=C3=A9llo?= world"}
    assert headers[3] == {"name": "X-Latin1", "value": "caf\ufffd"}  # 8-bit junk made JSON-safe
    assert common["from"] == ["Jörg <jorg@example.com>"]
    assert common["to"] == ["A <a@example.com>", "b@example.com"]
    assert common["subject"] == "héllo world"
    assert common["date"] == "Mon, 1 Jan 2024 00:00:00 +0000"
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 200) for i in range(100)) + b"\r\nbody"
    headers, truncated, _ = parse_headers(big)
    assert truncated
    assert 0 < len(headers) < 100
