"""Header values as people read them, from the bytes clients send (relay/headers.py, pure)."""

from __future__ import annotations

import pytest

from relay import headers as hdr


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"Subject: plain ascii", "plain ascii"),
        ("Subject: Grüße aus Köln".encode(), "Grüße aus Köln"),  # raw UTF-8, as sendmail passes it
        ("Subject: 注文\r\n #7".encode(), "注文 #7"),  # folded
        (b"Subject: caf\xe9 cr\xe8me", "café crème"),  # not UTF-8: Latin-1
        ("Subject: ok ü then \xff".encode() + b"\xff", "ok ü then ÿÿ"),  # mixed: only the bad octet
        (b"Subject: =?utf-8?q?caf=C3=A9?=", "café"),  # RFC 2047
        ("Subject: Grüße =?utf-8?q?caf=C3=A9?=".encode(), "Grüße café"),  # both in one value
        ("Subject: 日本 =?utf-8?q?a?= =?utf-8?q?b?= x".encode(), "日本 ab x"),
    ],
)
def test_subject_text(field: bytes, expected: str) -> None:
    data = b"From: a@example.com\r\n" + field + b"\r\n\r\nbody\r\n"
    for parse in (hdr.parse_raw, hdr.parse):
        assert hdr.decoded(hdr.first(parse(data), "Subject")) == expected


def test_header_block_text_keeps_utf8_and_reads_other_octets_as_latin1() -> None:
    data = "Subject: Grüße\r\nX-Old: caf".encode() + b"\xe9\r\n\r\nbody \xff\r\n"
    assert hdr.header_text(data) == "Subject: Grüße\r\nX-Old: café\r\n"
    assert hdr.first(hdr.parse_raw(data), "X-Missing") is None
