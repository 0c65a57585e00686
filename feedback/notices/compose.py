"""Bounce notices for the original sender (pure): whether to send one, and its bytes.

A notice is an RFC 3464 delivery status notification, because that is what mail
clients, ticket systems and list managers already understand: a short text a person
reads, a `message/delivery-status` part a program parses, and the original headers so
the sender can tell which message it was. The text says what to do, since SES's
diagnostic alone ("550 5.7.26 ...") means nothing to most senders.

Nothing here reads the clock, the store or the network: the caller passes `now` and
the Message-ID, so the same request always gives the same bytes and the golden files
in tests/golden/notices/ pin the exact output.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage, Message, MIMEPart
from email.parser import Parser
from email.utils import format_datetime, formataddr, parseaddr

from feedback.notices.texts import SES_SUBTYPE_TEXT, Kind, kind_for, status_words
from relay.addresses import unbracket
from relay.vocabulary import NoticeReason, is_one_of

__all__ = [
    "NoticeRequest",
    "compose",
    "should_notify",
    "suppression_note",
]

# CRLF on the wire; 7bit so that SES, LMTP and SMTP servers without 8BITMIME take it.
_POLICY = email_policy.SMTP.clone(cte_type="7bit")
_HEADER_LIMIT = 64 * 1024  # the original's header block (Postfix bounces 50 kB of it)
_FIELD_LIMIT = 900  # one DSN field or header value, well under SMTP's 998-octet line
_SUBJECT_LIMIT = 200
_WIDTH = 72

# Local parts of mail-system addresses. Mail from them is itself automatic (bounces,
# postmaster reports), so a notice to them is at best unread and at worst a loop.
_SYSTEM_LOCALS = frozenset({"mailer-daemon", "postmaster", "double-bounce"})
_STATUS_RE = re.compile(r"^[45]\.\d{1,3}\.\d{1,3}$")
_DIAG_TYPED_RE = re.compile(r"^\s*(smtp|x-[A-Za-z0-9-]+)\s*;\s*(.*)$", re.IGNORECASE | re.DOTALL)
_MSGID_RE = re.compile(r"^<?([^<>\s()]+)>?$")


@dataclass(frozen=True)
class NoticeRequest:
    """Everything a notice says, gathered by the caller from the store and the event.

    `original_sender` is the envelope sender ("" for the null sender), which is where
    the notice goes. `original_headers` is the raw header block kept when the body was
    dropped. Times must be timezone-aware. `extra` is one more sentence for the
    sender: for "suppressed" the suppression's reason, for bounces usually
    `suppression_note(...)` saying for how long the address is now suppressed.
    """

    reason: str
    recipient: str
    original_sender: str
    original_headers: str
    original_message_id: str | None
    original_subject: str | None
    submission_id: str
    arrival_date: datetime
    last_attempt: datetime
    status: str | None = None
    diagnostic: str | None = None
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    message_class: str | None = None
    extra: str | None = None

    def __post_init__(self) -> None:
        if not is_one_of(NoticeReason, self.reason):
            raise ValueError(
                f"unknown notice reason {self.reason!r}; expected one of {', '.join(sorted(NoticeReason))}"
            )
        for name in ("arrival_date", "last_attempt"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"NoticeRequest.{name} is a naive datetime; pass an aware (UTC) one")


def should_notify(req: NoticeRequest) -> str | None:
    """None when a notice may be sent to `req.original_sender`, else why not.

    Refused:
    - the null envelope sender: there is nobody to tell (RFC 5321 6.1, RFC 3464 2);
    - a mail-system sender (MAILER-DAEMON, postmaster, double-bounce): what they send
      is automatic, and answering automatic mail is how loops start;
    - an original marked `Auto-Submitted` other than "no" (RFC 3834 2): that covers our
      own notices, vacation replies and other machine mail;
    - an original that is a `multipart/report` of any report-type: a bounce, a read
      receipt (MDN) or an abuse report (ARF) is itself a notice, and a notice about a
      notice is never useful.

    Deliberately NOT refused: `Precedence: bulk/junk/list`. RFC 3834 asks
    auto-responders to skip those, but a delivery report is not an auto-response: once
    the relay has said 250 it owes the sender either delivery or a report, and list and
    bulk senders are exactly the ones who must hear about dead addresses. `X-Loop` is not
    checked either: our notices carry Auto-Submitted and the null sender, which already
    stop them.
    """
    sender = unbracket(req.original_sender)
    if not sender:
        return "null envelope sender"
    local = sender.rpartition("@")[0].lower() if "@" in sender else sender.lower()
    if local in _SYSTEM_LOCALS:
        return f"sender {sender} is a mail system address"
    headers = _parse_headers(req.original_headers)
    for value in headers.get_all("Auto-Submitted") or []:
        keyword = str(value).split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            return f"original is auto-submitted (Auto-Submitted: {_one_line(str(value), 80)})"
    if headers.get_content_type() == "multipart/report":
        report_type = headers.get_param("report-type") or "unspecified"
        return f"original is itself a report (multipart/report; report-type={report_type})"
    return None


def compose(
    req: NoticeRequest, *, notice_sender: str, reporting_mta: str, now: datetime, message_id: str
) -> bytes:
    """The notice for `req` as CRLF bytes, ready for a Maildir, LMTP, SMTP or SES.

    `notice_sender` is "MAILER-DAEMON@host" or "Name <address>" (a bare address gets
    the name "Mail Delivery System"); `message_id` is the notice's own Message-ID, with
    or without angle brackets. Raises ValueError for a null original sender (there is
    no one to address) and for malformed sender, host or Message-ID.
    """
    to = unbracket(req.original_sender)
    if not to:
        raise ValueError("cannot compose a notice for the null envelope sender")
    if now.tzinfo is None:
        raise ValueError("compose(now=...) is a naive datetime; pass an aware (UTC) one")
    from_header = _from_header(notice_sender)
    mta = reporting_mta.strip()
    if not mta or any(c.isspace() for c in mta):
        raise ValueError(f"reporting_mta must be a host name, got {reporting_mta!r}")
    own_id = _msgid(message_id)
    if own_id is None:
        raise ValueError(f"malformed notice Message-ID {message_id!r}")

    kind = kind_for(req.reason, req.bounce_subtype)
    status = _status(req, kind)
    original_subject = _one_line(req.original_subject or "", _SUBJECT_LIMIT)

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = from_header
    msg["To"] = to
    msg["Subject"] = f"{kind.subject}: {original_subject}" if original_subject else kind.subject
    msg["Date"] = _date(now)
    msg["Message-ID"] = own_id
    original_id = _msgid(req.original_message_id or "")
    if original_id is not None:
        msg["In-Reply-To"] = original_id
        msg["References"] = original_id
    msg["Auto-Submitted"] = "auto-replied"
    msg["MIME-Version"] = "1.0"
    msg.preamble = "This is a MIME-encapsulated message (a delivery status notification).\r\n"

    parts = [
        _text_part(req, kind, status, mta, original_subject),
        _status_part(req, kind, status, mta),
        _headers_part(req.original_headers),
    ]
    for part in parts:
        msg.attach(part)
    boundary = _boundary(own_id, parts)
    msg["Content-Type"] = f'multipart/report; report-type=delivery-status; boundary="{boundary}"'
    return msg.as_bytes()


def suppression_note(expires_at: datetime | None, *, now: datetime, message_class: str = "*") -> str:
    """A sentence for `NoticeRequest.extra`: is the address suppressed now, and until when.

    The composer cannot know the configured expiries, so the caller (which just merged
    the suppression) says it with this helper and every notice words it the same way.
    """
    scope = "all message classes" if message_class in ("*", "") else f"the {message_class!r} class"
    if expires_at is None:
        return (
            f"The address is now suppressed for {scope} with no expiry: the relay refuses mail "
            "to it until an administrator clears it."
        )
    if expires_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("suppression_note needs aware datetimes")
    return (
        f"The address is now suppressed for {scope} for {_duration(expires_at - now)}, "
        f"until {_date(expires_at)}."
    )


# --- the three parts -------------------------------------------------------------------


def _text_part(req: NoticeRequest, kind: Kind, status: str, mta: str, subject: str) -> MIMEPart:
    happened = kind.happened
    if req.reason == NoticeReason.PERMANENT_BOUNCE:
        detail = SES_SUBTYPE_TEXT.get((req.bounce_subtype or "").strip().lower())
        if detail:
            happened = f"{happened} {detail}"
    facts = [("Recipient", req.recipient)]
    if subject:
        facts.append(("Subject", subject))
    if req.original_message_id:
        facts.append(("Message-ID", _one_line(req.original_message_id, 200)))
    facts.append(("Submitted", _date(req.arrival_date)))
    facts.append(("Submission", req.submission_id))
    facts.append(("Status", f"{status} ({status_words(status)})"))

    paragraphs = [
        _fill(f"This is the mail delivery system at {mta}."),
        "Your message could not be delivered to the recipient below.",
        "\n".join(_fact(label, value) for label, value in facts),
        _fill(f"What happened: {happened}"),
        _fill(f"What to do: {kind.todo}"),
    ]
    if req.diagnostic and req.diagnostic.strip():
        diagnostic = _one_line(req.diagnostic, _FIELD_LIMIT)
        paragraphs.append(f"{kind.diag_label}:\n" + _fill(diagnostic, indent="    "))
    if req.extra and req.extra.strip():
        label = "Suppressed because" if req.reason == NoticeReason.SUPPRESSED else "Note"
        paragraphs.append(_fill(f"{label}: {_one_line(req.extra, _FIELD_LIMIT)}"))
    paragraphs.append(
        _fill(
            "The delivery report and the headers of your message are attached. This notice "
            "was generated automatically; replies to it are not read."
        )
    )
    part = MIMEPart(policy=_POLICY)
    part.set_content("\n\n".join(paragraphs) + "\n")
    part["Content-Description"] = "Notification"
    return part


def _status_part(req: NoticeRequest, kind: Kind, status: str, mta: str) -> MIMEPart:
    per_message = Message(policy=_POLICY)
    per_message["Reporting-MTA"] = f"dns; {mta}"
    per_message["Arrival-Date"] = _date(req.arrival_date)
    # Extension fields (RFC 3464 7): what a program needs to match the report to its mail.
    per_message["X-SES-Relay-Submission-Id"] = _field(req.submission_id)
    per_message["X-SES-Relay-Sender"] = f"rfc822; {_field(unbracket(req.original_sender))}"
    if req.message_class:
        per_message["X-SES-Relay-Class"] = _field(req.message_class)

    per_recipient = Message(policy=_POLICY)
    per_recipient["Final-Recipient"] = f"rfc822; {_field(req.recipient)}"
    # "failed" for every reason: SES has stopped trying (even a Transient bounce is
    # SES giving up on that message) and the relay will not retry, so nothing is
    # "delayed" from the sender's point of view; a 4.x.x Status says it was transient.
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    if req.diagnostic and req.diagnostic.strip():
        per_recipient["Diagnostic-Code"] = _diagnostic_code(req.diagnostic, kind.diag_type)
    per_recipient["Last-Attempt-Date"] = _date(req.last_attempt)
    per_recipient["X-SES-Relay-Reason"] = req.reason
    if req.bounce_type:
        bounce = req.bounce_type + (f"/{req.bounce_subtype}" if req.bounce_subtype else "")
        per_recipient["X-SES-Bounce"] = _field(bounce)

    part = MIMEPart(policy=_POLICY)
    part["Content-Description"] = "Delivery report"
    part["Content-Type"] = "message/delivery-status"
    part.set_payload([per_message, per_recipient])
    return part


def _headers_part(raw: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    text = _header_block(raw)
    lines = text.split("\n")
    if text.isascii() and max((len(line) for line in lines), default=0) <= 998:
        part.set_content(text, subtype="rfc822-headers", charset="us-ascii", cte="7bit")
    else:
        part.set_content(text, subtype="rfc822-headers")
    part["Content-Description"] = "Undelivered Message Headers"
    return part


# --- helpers ---------------------------------------------------------------------------


def _status(req: NoticeRequest, kind: Kind) -> str:
    given = (req.status or "").strip()
    if _STATUS_RE.match(given):
        return given
    subtype = (req.bounce_subtype or "").strip().lower()
    if req.reason == NoticeReason.PERMANENT_BOUNCE and subtype == "noemail":
        return "5.1.1"
    return kind.status


def _diagnostic_code(text: str, default_type: str) -> str:
    clean = _field(text)
    match = _DIAG_TYPED_RE.match(clean)
    if match:  # SES already says "smtp; 550 ..."
        return f"{match.group(1).lower()}; {match.group(2)}"
    return f"{default_type}; {clean}"


def _parse_headers(raw: str) -> Message:
    return Parser(policy=email_policy.compat32).parsestr(_header_block(raw), headersonly=True)


def _header_block(raw: str) -> str:
    """The header block alone, LF-ended, bounded: a body passed by mistake stops at the
    first empty line, and a huge block is cut at a line boundary."""
    lines: list[str] = []
    size = 0
    for line in raw.splitlines():
        if not line.strip():
            break
        size += len(line) + 1
        if size > _HEADER_LIMIT:
            break
        lines.append(line.rstrip())
    return "".join(f"{line}\n" for line in lines)


def _from_header(notice_sender: str) -> str:
    name, address = parseaddr(notice_sender)
    if not address or "@" not in address or any(c.isspace() for c in address):
        raise ValueError(f"notice_sender must be an address like MAILER-DAEMON@host, got {notice_sender!r}")
    return formataddr((name or "Mail Delivery System", address))


def _msgid(text: str) -> str | None:
    match = _MSGID_RE.match(text.strip())
    return f"<{match.group(1)}>" if match else None


def _date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC))


def _duration(delta: timedelta) -> str:
    """Rounded to its largest unit ("30 days", "1 hour"); the exact date follows it."""
    seconds = max(0, round(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _one_line(text: str, limit: int) -> str:
    """Whitespace (including CR/LF, which would inject headers) collapsed, length bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _field(text: str) -> str:
    """A DSN field value: one line, printable ASCII (RFC 3464 fields are not MIME-encoded)."""
    flat = _one_line(text, _FIELD_LIMIT)
    return "".join(c if " " <= c <= "~" else "?" for c in flat)


def _fact(label: str, value: str) -> str:
    return textwrap.fill(
        value,
        width=_WIDTH,
        initial_indent=f"  {label + ':':<12}",
        subsequent_indent=" " * 14,
        break_long_words=True,
        break_on_hyphens=False,
    )


def _fill(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text, width=_WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )


def _boundary(message_id: str, parts: list[MIMEPart]) -> str:
    """A boundary fixed by the Message-ID (deterministic output) that no part contains."""
    seed = hashlib.sha256(message_id.encode()).hexdigest()[:20]
    bodies = [part.as_bytes(policy=_POLICY) for part in parts]
    for attempt in range(100):
        boundary = f"=_notice_{seed}" + (f"_{attempt}" if attempt else "")
        if not any(boundary.encode() in body for body in bodies):
            return boundary
    raise ValueError("could not find a MIME boundary absent from the notice's parts")
