"""Byte-level header surgery on raw messages (pure).

The message body is never re-serialised: `email.generator` would rewrap lines and
change transfer encodings, which breaks signatures and wastes CPU on megabyte
bodies. We only split off the header block, drop named fields, and join again.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

# Headers that steer ses-relay and must never reach SES or the recipient.
INTERNAL_HEADERS = frozenset(
    {
        "x-message-class",
        "x-ses-configuration-set",
        "x-ses-message-tags",
        "x-ses-source-arn",
        "x-ses-from-arn",
        "x-ses-return-path-arn",
        "bcc",
    }
)


def split(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, the rest: blank line and body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at != -1:
            cut = at + len(sep) // 2
            return data[:cut], data[cut:]
    return data, b""


def fields(block: bytes) -> list[bytes]:
    """The header block as a list of fields, each with its continuation lines."""
    out: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def remove(data: bytes, names: frozenset[str] = INTERNAL_HEADERS) -> bytes:
    """Drop every field whose (case-insensitive) name is in `names`; body untouched."""
    block, rest = split(data)
    kept = [f for f in fields(block) if field_name(f) not in names]
    return b"".join(kept) + rest


def parse(data: bytes) -> EmailMessage:
    """Parse the header block only, with structured header objects (addresses etc.)."""
    block, _ = split(data)
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    msg = parser.parsebytes(block)
    assert isinstance(msg, EmailMessage)
    return msg


def parse_raw(data: bytes) -> Message:
    """Parse the header block only, values left as their raw text (the compat32 policy).

    The intake's lookups (class headers, tags, Message-ID) need no structure, and
    the default policy's per-header parsing was a tenth of the intake's CPU.
    """
    block, _ = split(data)
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)


def decoded(value: str | None) -> str | None:
    """RFC 2047 encoded words decoded (a Subject as people read it); raw text if malformed.

    The value may also hold raw UTF-8 text beside encoded words (see `first`).
    """
    if value is None or "=?" not in value:
        return value
    try:
        words = email.header.decode_header(value)
        if value.isascii():
            return str(email.header.make_header(words))
        # decode_header hands back the text between encoded words as raw-unicode-escape
        # bytes; make_header cannot take non-ASCII text, so join the pieces here.
        return "".join(
            word.decode(charset or "raw-unicode-escape", "replace") if isinstance(word, bytes) else word
            for word, charset in words
        )
    except (ValueError, LookupError, UnicodeError):
        return value


def text_of(raw: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532, and what MTAs pass on unchanged), with
    any byte that is not part of valid UTF-8 read as Latin-1 rather than lost to U+FFFD."""
    text = raw.decode("utf-8", "surrogateescape")
    if text.isascii() or not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return "".join(chr(ord(c) - 0xDC00) if "\udc80" <= c <= "\udcff" else c for c in text)


def header_text(data: bytes) -> str:
    """The raw header block as text, kept for the rfc822-headers part of notices."""
    block, _ = split(data)
    return text_of(block)


def _eight_bit(msg: Message, name: str) -> str | None:
    """The first `name` field as stored by the bytes parser, if it holds 8-bit octets.

    The parser keeps such octets as surrogate escapes; the compat32 policy then shows
    them as U+FFFD. Read them back as the bytes they were, decoded with `text_of`.
    """
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            if not isinstance(value, str) or value.isascii():
                return None
            raw = value.encode("utf-8", "surrogateescape")
            return re.sub(r"\r?\n(?=[ \t])", "", text_of(raw))
    return None


def first(msg: Message, name: str) -> str | None:
    """A header's value as text, or None; a malformed header yields its raw text.

    Raw 8-bit values (a UTF-8 Subject that an MTA passed on unchanged) are decoded as
    UTF-8, falling back to Latin-1 only for octets that are not UTF-8.
    """
    eight_bit = _eight_bit(msg, name)
    if eight_bit is not None:
        return eight_bit.strip()
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):
        raw = msg.get_all(name, failobj=[None])[0]
        return None if raw is None else str(raw)
    return None if value is None else str(value).strip()


# The email package's test for a header line (email.feedparser.headerRE): the first line
# that fails it ends the header section, as for the parser.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_COMPAT32 = email.policy.compat32


@dataclass(frozen=True)
class Headers:
    """A message's header block, read once for everything the intake asks of it.

    `Headers.of` splits the block into lines and fields in one pass; the lookups then
    answer exactly as `first(parse_raw(data), name)`, `parse_raw(data).get_all(name)`
    and `.get(name)` do (the email package's feed parser with the compat32 policy:
    unix-from and misplaced "From " lines skipped, a line that is no header ending the
    section, raw values with their folding), without building a Message: that parse
    and its lookups were most of the intake's header cost. `structured` parses only
    the fields it is asked for with the default policy (addresses, encoded words).
    """

    block: bytes
    loose: tuple[bytes, ...]  # every field as `fields(block)` cuts it (the ARN check's view)
    parsed: tuple[tuple[str, str], ...]  # (lower-case name, raw value) as the parser stores them
    sources: tuple[tuple[str, bytes], ...]  # (lower-case name, the field's bytes) of the same fields

    @classmethod
    def of(cls, data: bytes) -> Headers:
        block, _ = split(data)
        lines = block.splitlines(keepends=True)
        loose: list[bytes] = []
        for line in lines:
            if line[:1] in (b" ", b"\t") and loose:
                loose[-1] += line
            else:
                loose.append(line)
        return cls(block, tuple(loose), *_parser_fields(lines))

    def first(self, name: str) -> str | None:
        """`first(parse_raw(data), name)`: the first such field's value, stripped; 8-bit
        octets read as UTF-8 (Latin-1 where not UTF-8) and unfolded."""
        wanted = name.lower()
        for key, value in self.parsed:
            if key == wanted:
                if value.isascii():
                    return value.strip()
                raw = value.encode("utf-8", "surrogateescape")
                return re.sub(r"\r?\n(?=[ \t])", "", text_of(raw)).strip()
        return None

    def all(self, name: str) -> list[str]:
        """`[str(v) for v in parse_raw(data).get_all(name) or []]`."""
        wanted = name.lower()
        return [str(_COMPAT32.header_fetch_parse(name, v)) for key, v in self.parsed if key == wanted]

    def has(self, name: str) -> bool:
        """`parse_raw(data).get(name) is not None`."""
        wanted = name.lower()
        return any(key == wanted for key, _ in self.parsed)

    def loose_names(self) -> set[str]:
        """The names of `loose`'s fields, as `field_name` reads them."""
        return {field_name(f) for f in self.loose}

    def structured(self, names: set[str]) -> EmailMessage:
        """The fields named in `names` (lower case), parsed with the default policy: what
        `parse(data)` holds for those names."""
        chosen = b"".join(source for key, source in self.sources if key in names)
        msg = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(chosen)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def text(self) -> str:
        """`header_text(data)`."""
        return text_of(self.block)


def _parser_fields(lines: list[bytes]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, bytes], ...]]:
    """The header fields the email package's feed parser finds in `lines` (its
    `_parsegen` and `_parse_headers`, in one loop): (name, value) as compat32 stores
    them, and each field's bytes."""
    parsed: list[tuple[str, str]] = []
    sources: list[tuple[str, bytes]] = []
    name: str | None = None
    source: list[bytes] = []

    def close() -> None:
        if name is not None:
            first_line = source[0].decode("ascii", "surrogateescape")
            rest = b"".join(source[1:]).decode("ascii", "surrogateescape")
            value = first_line.split(":", 1)[1].lstrip(" \t") + rest
            parsed.append((name.lower(), value.rstrip("\r\n")))
            sources.append((name.lower(), b"".join(source)))

    count = 0
    for line in lines:
        if not _HEADER_LINE.match(line):
            break  # the end of the header section (a blank line, or a line that is no header)
        count += 1
    for number, line in enumerate(lines[:count]):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                source.append(line)
            continue  # a continuation with no field before it is ignored, as the parser does
        close()
        name, source = None, []
        if line.startswith(b"From "):
            if number == count - 1:
                break  # the parser reads a "From " line at the end as the body's first line
            continue  # unix-from (first line) or misplaced: not a field
        colon = line.find(b":")
        if colon == 0:
            continue  # no name: not a field
        name, source = line[:colon].decode("ascii"), [line]
    close()
    return tuple(parsed), tuple(sources)
