"""What DATA reads from a message's header block, table by table, over SMTP on 127.0.0.1 into
a real Store: class, tags, From, Subject and Message-ID from folded headers, encoded words,
duplicate headers, bare LF line ends, 8-bit text and a block cut short by a line that is
no header (relay/headers.py reads the block once, answering as the email package would).
"""

from __future__ import annotations

import pytest

from relay.intake import replies
from tests.support.intake import Client, Intake, listener_on_any_port, run_intake, serving

Facts = tuple[str, str, tuple[tuple[str, str], ...], str | None, str | None, str | None]


@pytest.mark.parametrize(
    ("head", "facts"),
    [
        (b"From: App <app@example.com>\r\nSubject: hello\r\nMessage-ID: <m1@example.com>\r\n",
         ("transactional", "default", (), "App <app@example.com>", "hello", "<m1@example.com>")),
        # folded: the class is read unfolded; a raw value keeps its folding, as it always has
        (b"X-Message-Class:\r\n bulk\r\nSubject: a long\r\n\tsubject\r\nFrom: a@example.com\r\n",
         ("bulk", "header", (), "a@example.com", "a long\r\n\tsubject", None)),
        # encoded words: the Subject is stored decoded, the From as written
        (b"Subject: =?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=\r\n"
         b"From: =?utf-8?q?=C3=89lise?= <e@example.com>\r\n",
         ("transactional", "default", (), "=?utf-8?q?=C3=89lise?= <e@example.com>", "caféé", None)),
        # duplicates: the first class and Subject win; every tags header counts
        (b"X-Message-Class: list\r\nx-message-class: bulk\r\nSubject: one\r\nSUBJECT: two\r\n"
         b"X-SES-MESSAGE-TAGS: a=1\r\nX-SES-MESSAGE-TAGS: b=2, a=3\r\n",
         ("list", "header", (("a", "3"), ("b", "2")), None, "one", None)),
        # bare LF line ends, normalised while reading from a trusted client
        (b"Subject: bare\nPrecedence: bulk\nMessage-ID: <lf@example.com>\n",
         ("bulk", "list-headers", (), None, "bare", "<lf@example.com>")),
        # 8-bit: UTF-8 as UTF-8, other octets as Latin-1; folding removed
        ("Subject: Grüße\r\n aus Köln\r\nFrom: Zoë <z@example.com>\r\n".encode(),
         ("transactional", "default", (), "Zoë <z@example.com>", "Grüße aus Köln", None)),
        (b"Subject: caf\xe9\r\n", ("transactional", "default", (), None, "café", None)),
        # a line that is no header ends the block for every lookup after it
        (b"Subject: cut\r\nnot a header line\r\nX-Message-Class: bulk\r\n",
         ("transactional", "default", (), None, "cut", None)),
        (b"List-Id: <news.example.com>\r\nSubject: news\r\n",
         ("list", "list-headers", (), None, "news", None)),
    ],
)  # fmt: skip
def test_header_facts_stored_at_data(tmp_path, head: bytes, facts: Facts) -> None:
    blank = b"\n" if not head.endswith(b"\r\n") else b"\r\n"

    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port, Client.connected(port) as client:
            await client.hello()
            assert await client.cmd("MAIL FROM:<app@example.com>") == replies.SENDER_OK
            assert await client.cmd("RCPT TO:<r@example.org>") == replies.RECIPIENT_OK
            await client.cmd("DATA")
            client.writer.write(head + blank + b"body\r\n.\r\n")
            answer = await client.reply()
        [sid] = intake.accepted
        assert answer == replies.queued(sid)
        sub = await intake.store.submission(sid)
        assert sub is not None
        assert (sub.klass, sub.class_source, sub.tags, sub.header_from, sub.subject, sub.message_id) == facts

    run_intake(tmp_path, scenario, {"listeners": [listener_on_any_port()]})
