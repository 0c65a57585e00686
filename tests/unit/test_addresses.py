"""The address forms the relay compares and writes to, table-tested."""

from __future__ import annotations

import pytest

from relay.addresses import AddressError, normalise, unbracket


@pytest.mark.parametrize(
    ("written", "bare"),
    [
        ("a@example.com", "a@example.com"),
        ("  <A@Example.com>  ", "A@Example.com"),  # case is kept: only normalise folds it
        ("< a@example.com >", "a@example.com"),
        ("<>", ""),  # the null sender
        ("", ""),
        ("<a@example.com", "<a@example.com"),  # an unmatched bracket is not a pair
        ("a@example.com>", "a@example.com>"),
        ("<<a@example.com>>", "<a@example.com>"),  # one pair only
        ("Name <a@example.com>", "Name <a@example.com>"),  # a display name is not stripped here
    ],
)
def test_unbracket_removes_one_enclosing_pair_and_the_spaces(written: str, bare: str) -> None:
    assert unbracket(written) == bare


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (" <User@Example.COM> ", "user@example.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
    ],
)
def test_normalise_reads_the_unbracketed_form(written: str, canonical: str) -> None:
    assert normalise(written) == canonical


@pytest.mark.parametrize("written", ["<>", "  ", "<a@example.com", "<<a@example.com>>"])
def test_normalise_refuses_what_unbracketing_leaves_unusable(written: str) -> None:
    with pytest.raises(AddressError):
        normalise(written)
