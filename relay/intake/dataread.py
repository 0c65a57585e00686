"""Reading the DATA of a client the relay trusts: lines may end in CRLF or a bare LF.

Applications hand their mail library bytes with LF line ends (Python's
`smtplib.sendmail(msg.as_bytes())`, many PHP and Node mailers), and Postfix's smtpd
accepts them (smtpd_forbid_bare_newline = normalize). aiosmtpd reads DATA by CRLF
only, so an LF-only body is one enormous "line": refused as too long, and its
dot-stuffed lines are never un-stuffed. `DataAssembler` reads lines ending in LF
instead, as Postfix does, and:

- ends DATA only at <CRLF>.<CRLF>: a "." line ends the message only when it and the
  line before it both end in CRLF. Any CRLF-only reader (aiosmtpd, a later hop) finds
  the end at the same byte, so a `\\n.\\r\\n` or `\\r\\n.\\n` cannot smuggle a second
  message past one reader and not the other;
- drops a "." line that touches a bare LF (Postfix does the same): a client that
  dot-stuffs never sends one, so it is either a smuggling attempt or noise;
- removes the transparency dot from every line that starts with one;
- with `normalise`, ends every line with CRLF (else keeps the line ends as sent, so
  that the handler can refuse them under `bare_line_endings = "reject"`);
- judges the line length on the line as it will be stored (un-stuffed, CRLF ended),
  and the size on the stored bytes; past either limit it keeps reading to the end of
  DATA but keeps nothing, as aiosmtpd does (RFC 5321 4.2.5: answer after the data).

Pure: the SMTP session feeds it what the stream reader returns (`read_data`).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

CRLF = b"\r\n"


class Outcome(enum.Enum):
    COMPLETE = "complete"
    TOO_LONG = "too long"  # a line over the line length
    TOO_BIG = "too big"  # the message over the size limit


@dataclass
class DataAssembler:
    """Feed it each chunk the reader returns; `feed` says when DATA has ended."""

    normalise: bool = True
    line_length: int = 1000  # octets a line, CRLF included (RFC 5321 4.5.3.1.6)
    size_limit: int | None = None  # octets of the stored message; None = no limit
    outcome: Outcome = Outcome.COMPLETE
    bare_line_ends: int = 0  # lines that ended in a bare LF
    _lines: list[bytes] = field(default_factory=list)
    _size: int = 0
    _prev_crlf: bool = True  # the DATA command line counts as a CRLF line
    _in_long_line: bool = False  # inside a line the reader returned in fragments
    _tail: bytes = b""  # last byte of the previous fragment (its CR may pair with the next LF)

    def feed(self, chunk: bytes) -> bool:
        """Take a complete line (ending in LF) or a fragment of an over-long one (no LF).

        True when this line was the end of DATA; nothing after it belongs to the message.
        """
        if not chunk:
            return False
        if not chunk.endswith(b"\n"):
            self._fail(Outcome.TOO_LONG)
            self._in_long_line, self._tail = True, chunk[-1:]
            return False
        crlf = chunk.endswith(CRLF) or (chunk == b"\n" and self._tail == b"\r")
        if self._in_long_line:  # the last piece of a line already refused
            self._in_long_line, self._tail, self._prev_crlf = False, b"", crlf
            return False
        content = chunk[: -2 if chunk.endswith(CRLF) else -1]
        if not crlf:
            self.bare_line_ends += 1
        if content == b".":
            if crlf and self._prev_crlf:
                return True
            if self.normalise:  # a "." touching a bare LF: dropped
                self._prev_crlf = crlf
                return False
        self._prev_crlf = crlf
        if content.startswith(b"."):
            content = content[1:]
        ending = CRLF if crlf or self.normalise else b"\n"
        if len(content) + len(CRLF) > self.line_length:
            self._fail(Outcome.TOO_LONG)
        self._size += len(content) + len(ending)
        if self.size_limit is not None and self._size > self.size_limit:
            self._fail(Outcome.TOO_BIG)
        if self.outcome is Outcome.COMPLETE:
            self._lines.append(content + ending)
        return False

    def _fail(self, outcome: Outcome) -> None:
        if self.outcome is Outcome.COMPLETE:
            self.outcome = outcome
        self._lines.clear()  # nothing more is kept: memory stays flat however much follows

    def message(self) -> bytes:
        """The message as it will be stored (empty unless the outcome is COMPLETE)."""
        return b"".join(self._lines)


async def read_data(reader: asyncio.StreamReader, assembler: DataAssembler) -> None:
    """Read from `reader` until the end of DATA. The reader's limit bounds each read:
    a longer line arrives in fragments, which the assembler refuses but keeps reading."""
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.read(exc.consumed)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("the client closed the connection during DATA") from exc
        if assembler.feed(chunk):
            return
