"""The fast MAIL/RCPT path parser against aiosmtpd's own `_getaddr` as the oracle.

RelaySMTP._getaddr answers `<local@domain>` and `<>` itself (relay/intake/paths.py) and
hands everything else to aiosmtpd; whatever form a client sends, the result must be
exactly aiosmtpd's. The table holds the odd forms; the generated cases put the
characters that matter to the RFC 5322 parser in every position.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from relay.intake.paths import plain_path
from relay.intake.smtp import RelaySMTP

ODD_FORMS = [
    "<>",
    "<> SIZE=100",
    "<>SIZE=100",
    "<>>",
    "<>(comment)",
    "<a@example.com>",
    "<a@example.com> SIZE=100 BODY=8BITMIME",
    "<a@example.com>SIZE=100",
    "<a@example.com>\tSIZE=100",
    "<a@example.com> \t SIZE=100  ",
    "<a@example.com>\x0cSIZE=100",
    "<a@example.com> (a comment) SIZE=100",
    "<a@example.com>(a comment)",
    "<a@example.com>>",
    "<a@example.com",
    "a@example.com",
    "a@example.com SIZE=100",
    " <a@example.com>",
    "< a@example.com>",
    "<a@example.com >",
    "<a @example.com>",
    "<a(x)@example.com>",
    '<"john doe"@example.com>',
    '<"john"@example.com>',
    '<"a\\"b"@example.com>',
    "<@relay.example.net:a@example.com>",
    "<@r1.example.net,@r2.example.net:a@example.com>",
    "<a@[192.0.2.1]>",
    "<a@[IPv6:2001:db8::1]>",
    "<ünï@exämple.com>",
    "<a@exämple.com>",
    "<a.@example.com>",
    "<.a@example.com>",
    "<a..b@example.com>",
    "<a@example.com.>",
    "<a@.example.com>",
    "<a@example..com>",
    "<a@-example.com>",
    "<a@1>",
    "<a@b@example.com>",
    "<a>",
    "<@>",
    "<a@>",
    "<@example.com>",
    "<first.last+tag@sub.example.co.uk>",
    "<!#$%&'*+/=?^_`{|}~-@example.com>",
    "<A.B-C_D@EXAMPLE.COM>",
    "<a@example.com> SMTPUTF8",
    "<<a@example.com>>",
    "<a@example.com><b@example.com>",
    "<a,b@example.com>",
    "<a;b@example.com>",
    "<a[b]@example.com>",
    "garbage",
    "<garbage",
    ">",
    "<",
    "(comment)<a@example.com>",
    "Name <a@example.com>",
    "<" + "x" * 64 + "@example.com>",
    "<" + "x" * 65 + "@example.com>",
]

# Characters the parser treats specially, plus atext, plus other white space.
ALPHABET = [*'ab.@<>"\\()[]:,; \t\x0c-+_=ü', "x", "y", "example.com"]


def outcome(parse: Callable[[str], object], arg: str) -> object:
    """What `parse` returns, or the type of what it raises (aiosmtpd raises IndexError on
    `<`: the session answers that with handle_exception's reply, and so must the relay)."""
    try:
        return parse(arg)
    except Exception as exc:  # the exception's type is the outcome compared
        return type(exc)


def oracle(arg: str, limit: int = 0) -> object:
    """aiosmtpd's `_getaddr` itself: it reads nothing of the server but `local_part_limit`."""
    server = SimpleNamespace(local_part_limit=limit)
    return outcome(lambda a: SMTP._getaddr(server, a), arg)  # type: ignore[arg-type]


@pytest.fixture
def relay_smtp() -> Iterator[RelaySMTP]:
    """A RelaySMTP protocol object, not connected: its `_getaddr` is all that is called."""
    loop = asyncio.new_event_loop()
    try:
        yield RelaySMTP(object(), loop=loop, hostname="relay.example.com")  # type: ignore[arg-type]
    finally:
        loop.close()


@pytest.mark.parametrize("arg", ODD_FORMS)
def test_every_odd_form_parses_as_aiosmtpd_parses_it(relay_smtp: RelaySMTP, arg: str) -> None:
    assert outcome(relay_smtp._getaddr, arg) == oracle(arg)
    relay_smtp.local_part_limit = 64
    assert outcome(relay_smtp._getaddr, arg) == oracle(arg, limit=64)


def test_generated_paths_parse_as_aiosmtpd_parses_them(relay_smtp: RelaySMTP) -> None:
    rng = random.Random(14)
    cases = []
    for _ in range(8000):
        middle = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))
        tail = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 3)))
        cases.append(f"<{middle}>{tail}")
        cases.append(f"<{middle}@example.com>{tail}")
    taken = 0
    for arg in cases:
        assert outcome(relay_smtp._getaddr, arg) == oracle(arg), arg
        taken += plain_path(arg) is not None
    assert taken > 500  # the generator reaches the fast path often, not only the fallback


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<a@example.com>", ("a@example.com", "")),
        ("<a@example.com> SIZE=1", ("a@example.com", "SIZE=1")),
        ("<>", ("<>", "")),
        ('<"a b"@example.com>', None),  # quoted: aiosmtpd's
        ("<@r.example:a@example.com>", None),  # source route: aiosmtpd's
        ("a@example.com", None),  # no brackets: aiosmtpd's
        ("<a@example.com> (c)", None),  # a comment after the path: aiosmtpd's
    ],
)
def test_plain_path_takes_only_the_plain_forms(arg: str, expected: tuple[str, str] | None) -> None:
    assert plain_path(arg) == expected
