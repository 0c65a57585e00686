"""Every SMTP reply ses-relay composes, named, with its enhanced status code (RFC 3463).

Tests compare against these constants, so a reply's wording can change in one place.
"""

from __future__ import annotations

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


def too_big(limit: int) -> str:
    return f"552 5.3.4 Message too big: the limit is {limit} bytes"


def suppressed(code: int, text: str) -> str:
    return f"{code} {text}"


# aiosmtpd's own replies that lack enhanced status codes, mapped to ours. Keys are
# the exact text aiosmtpd pushes (see aiosmtpd/smtp.py smtp_MAIL and smtp_DATA).
def enhance(line: str, size_limit: int | None) -> str:
    if line.startswith("552 Error: ") and size_limit:
        return too_big(size_limit)
    return line
