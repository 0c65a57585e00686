"""Header values as people read them, from the bytes clients send (relay/headers.py, pure)."""

from __future__ import annotations

import random

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


# -- Headers: one pass over the block, answering as the email package's parse does ----------------

BLOCKS = [
    b"From: App <app@example.com>\r\nTo: r@example.org\r\nSubject: hello\r\n\r\nbody\r\n",
    b"Subject: folded\r\n over two\r\n\tand three lines\r\nX-Message-Class: bulk\r\n\r\n",  # folded
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: =?utf-8?b?w4lsaXNl?= <e@example.com>\r\n\r\n",  # encoded words
    b"X-SES-MESSAGE-TAGS: a=1\r\nX-SES-MESSAGE-TAGS: b=2, c=3\r\nx-ses-message-tags: d=4\r\n\r\n",  # twice
    b"Subject: first\r\nSUBJECT: second\r\nsubject: third\r\n\r\n",
    b"Subject: bare LF\nX-Message-Class: list\n\nbody\n",  # bare LF line ends
    b"Subject: bare CR\rX-Message-Class: list\r\r\n",
    b"Subject: mixed\r\nX-A: b\n c\r\n\r\n",
    b"From sender@example.com Sun Nov 29 14:00:00 2026\r\nSubject: unix-from first\r\n\r\n",
    b"Subject: a\r\nFrom misplaced@example.com\r\nX-Message-Class: bulk\r\n\r\n",
    b"Subject: a\r\nFrom at-the-end@example.com\r\n",
    b" continuation first\r\nSubject: after it\r\n\r\n",
    b": no name\r\n more\r\nSubject: s\r\n\r\n",
    b"Subject: a\r\nnot a header line\r\nX-Message-Class: bulk\r\n\r\n",  # ends the section
    b"Subject : space before colon\r\nX-Message-Class: bulk\r\n\r\n",
    b"Subject:no space\r\nX-Empty:\r\nX-Blank:   \r\n\r\n",
    b"Subject: caf\xe9 cr\xe8me\r\nX-Message-Class: bulk\r\n\r\n",  # 8-bit, not UTF-8
    "Subject: 注文\r\n #7\r\nX-SES-MESSAGE-TAGS: k=ü\r\n\r\n".encode(),  # UTF-8, folded
    b"X-SES-MESSAGE-TAGS: \xff=1\r\n\r\n",
    b"Subject: trailing spaces   \t\r\nMessage-ID:   <m1@example.com>  \r\n\r\n",
    b"Subject: no blank line at all\r\nX-Message-Class: bulk\r\n",
    b"Subject: tabs\r\n\t\r\n\r\n",
    b"List-Id: <l.example.com>\r\nList-Unsubscribe: <mailto:u@example.com>\r\nPrecedence: bulk\r\n\r\n",
    b"",
    b"\r\nbody only\r\n",
    b"Subject: with NUL \x00 inside\r\n\r\n",
    b"Subject: ctl \x0b\x0c\r\nX: \x1c\r\n\r\n",
]
NAMES = ["From", "To", "Subject", "Message-ID", "X-Message-Class", "X-SES-MESSAGE-TAGS", "X-A", "X-Empty",
         "X-Blank", "List-Id", "List-Unsubscribe", "Precedence", "X", "X-Missing", ""]  # fmt: skip


def assert_same_as_the_parser(data: bytes) -> None:
    msg, headers = hdr.parse_raw(data), hdr.Headers.of(data)
    for name in NAMES:
        assert headers.first(name) == hdr.first(msg, name), (data, name)
        assert headers.all(name) == [str(v) for v in msg.get_all(name) or []], (data, name)
        assert headers.has(name) == (msg.get(name) is not None), (data, name)
    assert headers.text == hdr.header_text(data)
    full = hdr.parse(data)
    names = {key.lower() for key in full.keys()}
    assert {key.lower() for key in headers.structured(names).keys()} == names
    for name in names:
        assert [str(v) for v in headers.structured({name}).get_all(name, [])] == [
            str(v) for v in full.get_all(name, [])
        ], (data, name)


@pytest.mark.parametrize("data", BLOCKS)
def test_headers_answer_as_the_email_parser(data: bytes) -> None:
    assert_same_as_the_parser(data)


def test_generated_blocks_answer_as_the_email_parser() -> None:
    rng = random.Random(6)
    pieces = [b"Subject:", b"X-Message-Class: ", b"subject: ", b"From ", b"From: ", b":", b" ", b"\t", b"x"]
    pieces += [b"=?utf-8?q?a?=", b"\xc3\xa9", b"\xe9", b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t", b"To: a@b"]
    for _ in range(1500):
        assert_same_as_the_parser(b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))))
