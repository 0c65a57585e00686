"""Checks on what a client sends in DATA (pure).

Why each rule exists:
- A bare CR or LF left in the header section is how header injection survives into
  a message ("Subject: hi\\rBcc: victim"); RFC 5321 2.3.8 forbids them, so the
  message is refused rather than guessed at. (From clients the relay trusts, lines
  ending in a bare LF were already read as lines and ended with CRLF, as Postfix
  does: relay/intake/dataread.py. What is left here is a bare CR, or any bare line end
  under `bare_line_endings = "reject"`.)
- A bare CR or LF in the body is what SMTP smuggling needs (`\\n.\\r\\n` read as the
  end of data by some later hop). DATA ends only at CRLF.CRLF here, so the message
  stays one message; normalising bare line ends to CRLF (or refusing them, by
  configuration) keeps that ambiguity from leaving the relay.
- Decoded header values (RFC 2047 encoded words) may still carry CR/LF; those are
  refused too, since the values are stored and copied into notices.
- X-SES-*-ARN headers let a client send through another account's identity; they
  are removed unless the authenticated user is explicitly allowed to use them.
"""

from __future__ import annotations

import re

from relay import headers as hdr

ARN_HEADERS = frozenset({"x-ses-source-arn", "x-ses-from-arn", "x-ses-return-path-arn"})
_LINE_END = re.compile(rb"\r\n|\r|\n")


def header_problem(headers: hdr.Headers) -> str | None:
    """Why the header section cannot be accepted, or None."""
    block = headers.block
    if b"\0" in block:
        return "the header section contains a NUL byte"
    inner = block.replace(b"\r\n", b"")
    if b"\r" in inner or b"\n" in inner:
        return "the header section contains a bare CR or LF (header lines must end with CRLF)"
    if b"=?" not in block:
        return None  # no encoded words, so decoding cannot produce anything the bytes lack
    msg = headers.structured({name for name, _ in headers.sources})
    for name in dict.fromkeys(msg.keys()):
        try:
            values = [str(v) for v in msg.get_all(name, [])]
        except (ValueError, IndexError, TypeError, AttributeError):
            continue  # unparseable as structured; its raw bytes passed the check above
        if any("\r" in v or "\n" in v or "\0" in v for v in values):
            return f"header {name} has a CR, LF or NUL in its decoded value"
    return None


def has_bare_line_endings(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def normalise_line_endings(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF (as Postfix's smtpd_forbid_bare_newline=normalize)."""
    return _LINE_END.sub(b"\r\n", data)


def arn_headers_present(headers: hdr.Headers) -> bool:
    return not ARN_HEADERS.isdisjoint(headers.loose_names())


def strip_arn_headers(data: bytes) -> bytes:
    return hdr.remove(data, ARN_HEADERS)
