"""Byte-level header surgery on raw messages (pure).

The message body is never re-serialised: `email.generator` would rewrap lines and
change transfer encodings, which breaks signatures and wastes CPU on megabyte
bodies. We only split off the header block, drop named fields, and join again.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
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
    """RFC 2047 encoded words decoded (a Subject as people read it); raw text if malformed."""
    if value is None or "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def header_text(data: bytes) -> str:
    """The raw header block as text, kept for the rfc822-headers part of notices."""
    block, _ = split(data)
    return block.decode("utf-8", "replace")


def first(msg: Message, name: str) -> str | None:
    """A header's value as text, or None; a malformed header yields its raw text."""
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):
        raw = msg.get_all(name, failobj=[None])[0]
        return None if raw is None else str(raw)
    return None if value is None else str(value).strip()
