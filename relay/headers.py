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
