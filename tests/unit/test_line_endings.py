"""How DATA from a trusted client is read (relay/intake/dataread.py `DataAssembler`), table-tested:
where the message ends, bare LF normalised or kept for refusal, dots un-stuffed, limits.
"""

from __future__ import annotations

import pytest

from relay.intake.dataread import DataAssembler, Outcome

# -- the reading rules, table-tested -----------------------------------------------------------


def assemble(*chunks: bytes, normalise: bool = True, line_length: int = 1000, size: int | None = None):
    """Feed chunks; return (index of the chunk that ended DATA or None, outcome, message)."""
    assembler = DataAssembler(normalise, line_length, size)
    for i, chunk in enumerate(chunks):
        if assembler.feed(chunk):
            return i, assembler.outcome, assembler.message()
    return None, assembler.outcome, assembler.message()


@pytest.mark.parametrize(
    ("chunks", "ended_at", "message"),
    [
        ((b".\r\n",), 0, b""),  # empty message
        ((b"a\r\n", b".\r\n", b"b\r\n"), 1, b"a\r\n"),
        ((b"a\n", b".\r\n", b"b\r\n", b".\r\n"), 3, b"a\r\nb\r\n"),  # \n.\r\n: dropped
        ((b"a\r\n", b".\n", b"b\r\n", b".\r\n"), 3, b"a\r\nb\r\n"),  # \r\n.\n: dropped
        ((b"a\n", b".\n", b".\r\n", b".\r\n"), 3, b"a\r\n"),  # the third "." follows a CRLF "."
        ((b"..x\n", b"..\r\n", b".\r\n"), 2, b".x\r\n.\r\n"),  # un-stuffed after either line end
        ((b"a\r\r\n", b".\r\n"), 1, b"a\r\r\n"),  # a bare CR stays for relay/intake/inputcheck.py
        ((b"x" * 1000, b"\r", b"\n", b".\r\n"), 3, b""),  # fragments: the CR pairs with the LF
        ((b"no end\r\n",), None, b"no end\r\n"),
    ],
)
def test_data_assembler_ends_only_at_crlf_dot_crlf(
    chunks: tuple[bytes, ...], ended_at: int | None, message: bytes
) -> None:
    assert assemble(*chunks)[0] == ended_at
    assert assemble(*chunks)[2] == message


def test_data_assembler_limits_and_reject_mode() -> None:
    assert assemble(b"y" * 998 + b"\n", b".\r\n")[1] is Outcome.COMPLETE
    assert assemble(b"y" * 999 + b"\n", b".\r\n")[1] is Outcome.TOO_LONG
    assert assemble(b"." + b"y" * 998 + b"\r\n", b".\r\n")[1] is Outcome.COMPLETE  # the dot is not stored
    assert assemble(b"y" * 1200, b"\r\n", b"short\r\n", b".\r\n")[:2] == (3, Outcome.TOO_LONG)
    assert assemble(*[b"a\r\n"] * 10, b".\r\n", size=15)[:2] == (10, Outcome.TOO_BIG)
    fits = assemble(*[b"a\n"] * 5, b"\r\n", b".\r\n", size=17)
    assert fits == (6, Outcome.COMPLETE, b"a\r\n" * 5 + b"\r\n")
    assert assemble(*[b"a\n"] * 5, b".\r\n")[0] is None  # "\n.\r\n" is not the end: DATA goes on
    # Kept as sent for the handler to refuse; the end of DATA is the same.
    kept = assemble(b"a\n", b".\n", b"b\r\n", b".\r\n", normalise=False)
    assert kept == (3, Outcome.COMPLETE, b"a\n\nb\r\n")
    assembler = DataAssembler()
    for chunk in (b"a\n", b"b\r\n", b"c\n"):
        assembler.feed(chunk)
    assert assembler.bare_line_ends == 2
