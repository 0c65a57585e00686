"""Every SMTP reply ses-relay composes, named, with its enhanced status code (RFC 3463).

Tests compare against these constants, so a reply's wording can change in one place.
"""

from __future__ import annotations

import re

OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Sender ok"
RECIPIENT_OK = "250 2.1.5 Recipient ok"


def queued(submission_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {submission_id}"


AUTH_REQUIRED = "530 5.7.0 Authentication required"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
STORE_UNAVAILABLE = "451 4.3.0 Temporary failure: message store unavailable, try again later"
INTERNAL_ERROR = "451 4.3.0 Temporary failure: internal error, try again later"
ALL_SUPPRESSED = "550 5.7.1 All recipients are suppressed for class {klass}; message not sent"
BAD_CONTENT = "550 5.6.0 {detail}"


def class_paused(klass: str, by: str, reason: str) -> str:
    """`by` is "the reputation guard" or the person who paused the class; one line always."""
    why = " ".join(reason.split())
    return f"451 4.7.1 Class {klass} is paused by {by}{f' ({why})' if why else ''}; try again later"


def too_big(limit: int) -> str:
    return f"552 5.3.4 Message too big: the limit is {limit} bytes"


def suppressed(code: int, text: str) -> str:
    return f"{code} {text}"


# Access control and limits (relay/intake/auth.py, relay/intake/limits.py).
AUTH_LOCKED = "454 4.7.0 Too many failed authentication attempts; try again later"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_BAD_AUTHZID = "535 5.7.8 Authorization identity must be empty or the login name"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address; try again later"
TIMEOUT = "421 4.4.2 Timeout: no command received in time, closing connection"
DATA_TIMEOUT = "421 4.4.2 Timeout: DATA took too long, closing connection"
FROM_NOT_PERMITTED = "550 5.7.1 User {user} may not send as From: {address}"
NO_FROM = "550 5.7.1 The From header is missing or has no address; user {user} must use a permitted From"
BARE_LINE_ENDINGS = "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"


def sender_not_permitted(user: str, address: str) -> str:
    return f"550 5.7.1 User {user} may not send as <{address}>"


def rate_limited(who: str, per_minute: int) -> str:
    return f"450 4.7.0 Rate limit exceeded: {who} may send {per_minute} messages a minute; try again later"


# aiosmtpd's own replies that lack enhanced status codes, mapped to ours. Keys are
# the exact text aiosmtpd pushes (see aiosmtpd/smtp.py _handle_client, smtp_MAIL, smtp_DATA).
_AIOSMTPD: dict[str, str] = {
    "500 Error: strict ASCII mode": (
        "553 5.6.7 Non-ASCII characters are not accepted in commands: SMTPUTF8 is not supported"
    ),
    "501 Error: SMTPUTF8 disabled": "555 5.6.7 SMTPUTF8 is not supported by this relay",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Syntax error",
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    "555 RCPT TO parameters not recognized or not implemented": (
        "555 5.5.4 RCPT TO parameters not recognized or not implemented"
    ),
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": OK,
}


def line_too_long(line_length: int | None) -> str:
    limit = f"at most {line_length} octets a line" if line_length else "a line is too long"
    return f"500 5.5.2 Line too long: {limit} (RFC 5321 4.5.3.1.6); message not accepted"


# The enhanced code for a reply aiosmtpd composes without one, by basic code (RFC 3463).
_DEFAULT_ENHANCED: dict[str, str] = {
    "500": "5.5.2",  # syntax error
    "501": "5.5.4",  # bad arguments
    "502": "5.5.1",  # command not implemented
    "503": "5.5.1",  # bad sequence of commands
    "504": "5.5.4",
    "552": "5.3.4",
    "555": "5.5.4",
}
# Replies that carry no enhanced code (RFC 2034): the greeting, and the intermediate
# 334 (an AUTH challenge) and 354 (go ahead with DATA).
_PLAIN_CODES = frozenset({"220", "334", "354"})
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_BASIC = re.compile(r"^([2-5])\d\d(?:[ -]|$)")


def enhance(line: str, size_limit: int | None, line_length: int | None = None) -> str:
    """`line` with an enhanced status code, as ENHANCEDSTATUSCODES (advertised) promises."""
    if line.startswith("552 Error: ") and size_limit:
        return too_big(size_limit)
    if line.startswith("500 Line too long"):
        return line_too_long(line_length)
    if line in _AIOSMTPD:
        return _AIOSMTPD[line]
    basic = _BASIC.match(line)
    if basic is None or line[:3] in _PLAIN_CODES or _HAS_ENHANCED.match(line):
        return line
    code = _DEFAULT_ENHANCED.get(line[:3], f"{basic.group(1)}.0.0")
    return f"{line[:3]}{line[3:4] or ' '}{code}{' ' + line[4:] if line[4:] else ''}"
