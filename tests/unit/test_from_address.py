"""The sender's From address: one regex for the common forms, the email package for the rest."""

from __future__ import annotations

import pytest

from relay.sending import sender
from relay.sending.sender import from_address, parsed_from_address

COMMON = [
    "alice@example.com",
    "  Alice@Example.COM ",
    "Alice <alice@example.com>",
    "Alice Smith<alice@example.com>",
    '"Smith, Alice" <alice@example.com>',
    '"Smith, Alice"<alice@example.com>',
    "J. R. Smith <jr+tag@mail.example.com>",
    "=?utf-8?q?J=C3=B6rg?= <joerg@example.de>",
    "<bare@example.com>",
    "Bad <not-an-address>",
]
ODD = [
    "Bad <two@@example.com>",
    "alice@example.com (Alice)",
    "Undisclosed recipients:;",
    "a@example.com, b@example.com",
    "Team: a@example.com, b@example.com;",
    '"Al <x> ice" <alice@example.com>',
    '"Al \\" ice" <alice@example.com>',
    "alice@example.com <bob@example.com>",
    "(comment) Alice <alice@example.com>",
    "not an address at all",
    "Alice <alice@[192.0.2.1]>",
]


@pytest.mark.parametrize("header", COMMON + ODD)
def test_the_same_answer_as_the_email_package(header: str) -> None:
    assert from_address(header) == parsed_from_address(header)


@pytest.mark.parametrize("header", [h for h in COMMON if "@" in h.split("<")[-1]])
def test_common_forms_never_reach_the_email_package(header: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_: str) -> None:
        raise AssertionError("parsed with the email package")

    monkeypatch.setattr(sender, "parsed_from_address", refuse)
    from_address(header)


def test_non_ascii_as_normalise_takes_it() -> None:
    """The email package sees 8-bit header text as surrogates: an IDN domain came out as
    no address and a non-ASCII local part as a UnicodeEncodeError. Here the domain is
    IDNA-encoded, as the DKIM keys' domains are, and the local part refused."""
    assert from_address("Shop <orders@bücher.example>") == "orders@xn--bcher-kva.example"
    assert from_address("Ünïcode <ü@example.com>") is None


def test_no_header_no_address() -> None:
    assert from_address(None) is None and from_address("") is None
