"""The sandbox upstream: a local stand-in for SES that follows its mailbox simulator.

`ses-relay serve --sandbox` uses `SandboxSes` instead of the boto3 client so the
whole loop (intake, spool, sender, events, suppression, notices) runs on a laptop
with no AWS account. Nothing leaves the machine:

- delivered copies go to one Maildir per recipient, `<data-dir>/sandbox/<address>/`;
- SES events go to the local `Feed` (`<data-dir>/sandbox/feed/`) as SNS-envelope
  bodies holding real SES *event-publishing* JSON (`eventType`, not the identity
  notifications' `notificationType`), so the feedback consumer parses exactly what
  it would get from SNS -> SQS in production.

Outcomes follow the SES mailbox simulator (`simulate`, a pure function). Copies and
events are written before `send_raw` returns the MessageId: a crash in between
makes the worker resend (a duplicate, as with real SES after a lost reply) and
never leaves an accepted message without its events.
"""

from __future__ import annotations

import email.policy
import json
import logging
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import AddressHeader
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

from relay import maildir
from relay.addresses import AddressError, normalise
from relay.sandbox.feed import Feed
from relay.sending.ses_api import MAX_DESTINATIONS, Disposition, SendRequest, SesError

log = logging.getLogger(__name__)

SIMULATOR_DOMAIN = "simulator.amazonses.com"
SANDBOX_TOPIC = "ses-relay-sandbox"
SOURCE_IP = "127.0.0.1"
CALLER_IDENTITY = "ses-relay-sandbox"
BOUNCE_REPORTING_MTA = "dns; amazonses.com"
DELIVERY_REPORTING_MTA = "ses-relay-sandbox.localhost"
REMOTE_MTA_IP = "127.0.0.1"
SMTP_OK = "250 2.6.0 Message received"
COMPLAINT_USER_AGENT = "Amazon SES Mailbox Simulator"

MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES's largest raw message (API v2)
MAX_HEADERS_BYTES = 10 * 1024  # beyond this SES sets headersTruncated
MAX_TAGS = 50
MAX_TAG_LENGTH = 256
_TAG_OK = re.compile(r"^[A-Za-z0-9_-]+$")

GENERAL_DIAGNOSTIC = "smtp; 550 5.1.1 user unknown"
SUPPRESSION_DIAGNOSTIC = (
    "Amazon SES did not send the message to this address because it is on the "
    "suppression list for your account."
)


# --- pure core: outcomes ---------------------------------------------------------


@dataclass(frozen=True)
class Bounce:
    bounce_type: str  # "Permanent" | "Transient" | "Undetermined"
    bounce_subtype: str
    status: str  # enhanced status code, e.g. "5.1.1"
    diagnostic: str


@dataclass(frozen=True)
class Outcome:
    """What happens to one recipient: delivered (maybe complained about) or bounced."""

    delivered: bool
    bounce: Bounce | None = None
    complaint: str | None = None  # complaintFeedbackType, e.g. "abuse"


DELIVERED = Outcome(delivered=True)
_SIMULATOR: dict[str, Outcome] = {
    "success": DELIVERED,
    # Real SES also sends an out-of-office reply to the sender; delivery is what matters here.
    "ooto": DELIVERED,
    "bounce": Outcome(False, Bounce("Permanent", "General", "5.1.1", GENERAL_DIAGNOSTIC)),
    "complaint": Outcome(True, complaint="abuse"),
    "suppressionlist": Outcome(
        False, Bounce("Permanent", "OnAccountSuppressionList", "5.1.1", SUPPRESSION_DIAGNOSTIC)
    ),
}


def simulate(address: str) -> Outcome:
    """The SES mailbox simulator's verdict for one recipient.

    Only the simulator domain is special; its local part counts up to a `+label`
    (`bounce+ticket42@...` bounces), case-insensitively, as at SES. Everything else,
    including unknown simulator mailboxes, is delivered.
    """
    _, addr = parseaddr(address)
    local, at, domain = (addr or address).strip().rpartition("@")
    if not at or domain.rstrip(".").lower() != SIMULATOR_DOMAIN:
        return DELIVERED
    return _SIMULATOR.get(local.split("+", 1)[0].lower(), DELIVERED)


# --- pure core: ids, headers, events ---------------------------------------------


def ses_timestamp(when: datetime) -> str:
    """SES's timestamp format: UTC, milliseconds, `Z`."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: SES timestamps are UTC")
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{text[:-3]}Z"


def ses_id(when: datetime) -> str:
    """An id shaped like SES's message and feedback ids:
    `0100` + 12 hex digits of epoch milliseconds, a UUID, `-000000`."""
    ms = int(when.timestamp() * 1000)
    return f"0100{ms:012x}-{uuid.uuid4()}-000000"


def mailbox_dir(root: Path, address: str) -> Path:
    """Where the sandbox keeps one recipient's Maildir.

    The normalised address is the directory name; `/` (legal in a local part) and `%`
    are percent-encoded so that no address can escape `root` or collide with another.
    """
    return Path(root) / urllib.parse.quote(normalise(address), safe="@!#$&'*+-=?^_`{|}~.")


def _clean(value: str) -> str:
    """Header text as JSON-safe Unicode: unfolded, undecodable 8-bit bytes replaced."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip("\r\n")


def parse_headers(raw: bytes) -> tuple[list[dict[str, str]], bool, dict[str, Any]]:
    """The `headers`, `headersTruncated` and `commonHeaders` SES puts in `mail`."""
    msg = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    headers: list[dict[str, str]] = []
    size = 0
    truncated = False
    for name, value in msg.raw_items():
        entry = {"name": _clean(name), "value": _clean(str(value))}
        size += len(entry["name"]) + len(entry["value"]) + 4
        if size > MAX_HEADERS_BYTES:
            truncated = True
            break
        headers.append(entry)
    common: dict[str, Any] = {}
    for key, header in (("from", "From"), ("replyTo", "Reply-To"), ("to", "To"), ("cc", "Cc")):
        raw_values = [v for n, v in msg.raw_items() if n.lower() == header.lower()]
        if raw_values:
            common[key] = _address_list(msg, header, raw_values)
    for key, header in (("date", "Date"), ("messageId", "Message-ID"), ("subject", "Subject")):
        raw_values = [v for n, v in msg.raw_items() if n.lower() == header.lower()]
        if not raw_values:
            continue
        common[key] = _clean(raw_values[0]).strip()
        if key == "subject":
            try:
                common[key] = _clean(str(msg[header])).strip()  # RFC 2047 decoded, as SES shows it
            except Exception:  # noqa: S110 - undecodable subject: keep the raw text
                pass
    return headers, truncated, common


def _address_list(msg: Message, header: str, raw_values: list[str]) -> list[str]:
    """Each address of the header(s) as SES lists them: `Name <addr>`, names decoded.
    A header the email package cannot make sense of falls back to a plain split."""
    try:
        result: list[str] = []
        for value in msg.get_all(header, []):
            if not isinstance(value, AddressHeader):
                raise TypeError(f"{header} is not an address header")
            result.extend(_clean(str(a)) for a in value.addresses)
        return result
    except Exception:
        return [
            _clean(f"{name} <{addr}>" if name else addr)
            for name, addr in getaddresses([_clean(v) for v in raw_values])
            if addr
        ]


def build_mail(
    request: SendRequest,
    *,
    message_id: str,
    sent_at: datetime,
    account_id: str,
    region: str,
) -> dict[str, Any]:
    """The `mail` object shared by every event of one SendRawEmail call."""
    headers, truncated, common = parse_headers(request.raw)
    source = request.source or (common.get("from") or [""])[0]
    from_domain = _domain((common.get("from") or [source])[0]) or _domain(source)
    tags: dict[str, list[str]] = {}
    if request.configuration_set:
        tags["ses:configuration-set"] = [request.configuration_set]
    tags["ses:source-ip"] = [SOURCE_IP]
    if from_domain:
        tags["ses:from-domain"] = [from_domain]
    tags["ses:caller-identity"] = [CALLER_IDENTITY]
    for name, value in request.tags:
        tags.setdefault(name, []).append(value)
    source_arn = request.source_arn or f"arn:aws:ses:{region}:{account_id}:identity/{_domain(source)}"
    return {
        "timestamp": ses_timestamp(sent_at),
        "source": source,
        "sourceArn": source_arn,
        "sendingAccountId": account_id,
        "messageId": message_id,
        "destination": list(request.destinations),
        "headersTruncated": truncated,
        "headers": headers,
        "commonHeaders": common,
        "tags": tags,
    }


def _domain(address: str) -> str:
    _, addr = parseaddr(address)
    return addr.rpartition("@")[2].lower() if "@" in addr else ""


def send_event(mail: dict[str, Any]) -> dict[str, Any]:
    return {"eventType": "Send", "mail": mail, "send": {}}


def delivery_event(mail: dict[str, Any], recipient: str, at: datetime, processing_ms: int) -> dict[str, Any]:
    return {
        "eventType": "Delivery",
        "mail": mail,
        "delivery": {
            "timestamp": ses_timestamp(at),
            "processingTimeMillis": processing_ms,
            "recipients": [recipient],
            "smtpResponse": SMTP_OK,
            "reportingMTA": DELIVERY_REPORTING_MTA,
            "remoteMtaIp": REMOTE_MTA_IP,
        },
    }


def bounce_event(mail: dict[str, Any], recipient: str, bounce: Bounce, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": mail,
        "bounce": {
            "bounceType": bounce.bounce_type,
            "bounceSubType": bounce.bounce_subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "action": "failed",
                    "status": bounce.status,
                    "diagnosticCode": bounce.diagnostic,
                }
            ],
            "timestamp": ses_timestamp(at),
            "feedbackId": ses_id(at),
            "reportingMTA": BOUNCE_REPORTING_MTA,
            "remoteMtaIp": REMOTE_MTA_IP,
        },
    }


def complaint_event(mail: dict[str, Any], recipient: str, feedback_type: str, at: datetime) -> dict[str, Any]:
    return {
        "eventType": "Complaint",
        "mail": mail,
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": ses_timestamp(at),
            "feedbackId": ses_id(at),
            "complaintSubType": None,
            "complaintFeedbackType": feedback_type,
            "userAgent": COMPLAINT_USER_AGENT,
            "arrivalDate": ses_timestamp(at),
        },
    }


def sns_envelope(event: dict[str, Any], *, topic_arn: str, at: datetime) -> str:
    """The SQS body SNS would deliver (no raw message delivery): `Message` is a string."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": json.dumps(event),
            "Timestamp": ses_timestamp(at),
            "SignatureVersion": "1",
            "Signature": "sandbox",
            "SigningCertURL": "",
            "UnsubscribeURL": "",
        }
    )


def validate(request: SendRequest) -> list[str]:
    """Refuse what SES refuses, before anything is written; return the normalised
    destinations. Catching these in the sandbox keeps relay bugs from hiding until
    production."""

    def invalid(message: str) -> SesError:
        return SesError("InvalidParameterValue", message, Disposition.PERMANENT, http_status=400)

    if not request.raw:
        raise invalid("Empty raw message")
    if len(request.raw) > MAX_MESSAGE_BYTES:
        raise SesError(
            "MessageRejected",
            f"Message length is more than {MAX_MESSAGE_BYTES} bytes long",
            Disposition.PERMANENT,
            http_status=400,
        )
    if not request.destinations:
        raise invalid("No recipients specified")
    if len(request.destinations) > MAX_DESTINATIONS:
        raise invalid(f"Recipient count exceeds {MAX_DESTINATIONS}")
    if len(request.tags) > MAX_TAGS:
        raise invalid(f"More than {MAX_TAGS} message tags")
    for name, value in request.tags:
        for part in (name, value):
            if not _TAG_OK.match(part) or len(part) > MAX_TAG_LENGTH:
                raise invalid(f"Invalid message tag {name!r}={value!r}: only A-Z a-z 0-9 _ - allowed")
    if request.source and not _domain(request.source):
        raise invalid(f"Illegal address: {request.source!r}")
    normalised = []
    for destination in request.destinations:
        try:
            normalised.append(normalise(parseaddr(destination)[1] or destination))
        except AddressError as exc:
            raise invalid(f"Illegal address: {exc}") from None
    return normalised


# --- thin shell ------------------------------------------------------------------


class SandboxSes:
    """SesApi for `--sandbox`: delivers to local Maildirs and emits SES events to a Feed."""

    def __init__(
        self,
        root: Path,
        feed: Feed,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        account_id: str = "000000000000",
        region: str = "us-east-1",
        send_rate: float = 1000.0,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.feed = feed
        self._clock = clock
        self._account_id = account_id
        self._region = region
        self._send_rate = send_rate
        self.topic_arn = f"arn:aws:sns:{region}:{account_id}:{SANDBOX_TOPIC}"
        self._lock = threading.Lock()
        self._failures: list[SesError] = []
        log.warning(
            "SANDBOX MODE: no mail leaves this machine and Amazon SES is never called. "
            "Delivered copies go to Maildirs under %s/<recipient>/; SES events go to %s",
            self.root,
            feed.path,
        )

    def fail_next(
        self,
        n: int,
        code: str = "ServiceUnavailable",
        message: str = "Sandbox: simulated SES failure",
        disposition: Disposition = Disposition.RETRY,
        http_status: int | None = None,
    ) -> None:
        """Make the next `n` calls raise this SesError (writing nothing), to exercise
        the worker's retry and failure handling. Replaces any failures still pending."""
        if n < 0:
            raise ValueError(f"n must not be negative, not {n}")
        error = SesError(code, message, disposition, http_status=http_status)
        with self._lock:
            self._failures = [error] * n

    def max_send_rate(self) -> float:
        return self._send_rate

    def send_raw(self, request: SendRequest) -> str:
        with self._lock:
            failure = self._failures.pop() if self._failures else None
        if failure is not None:
            raise SesError(failure.code, failure.message, failure.disposition, failure.http_status)
        recipients = validate(request)
        sent_at = self._clock()
        message_id = ses_id(sent_at)
        mail = build_mail(
            request, message_id=message_id, sent_at=sent_at, account_id=self._account_id, region=self._region
        )
        return_path = parseaddr(mail["source"])[1]
        events: list[dict[str, Any]] = [send_event(mail)]
        seen: set[str] = set()
        for destination, address in zip(request.destinations, recipients, strict=True):
            given = parseaddr(destination)[1] or destination.strip()  # SES reports the bare address
            if address in seen:  # SES delivers a duplicated destination once
                continue
            seen.add(address)
            outcome = simulate(address)
            if outcome.bounce is not None:
                events.append(bounce_event(mail, given, outcome.bounce, self._clock()))
                continue
            self._deliver(address, request.raw, return_path)
            done = self._clock()
            elapsed = max(0, int((done - sent_at).total_seconds() * 1000))
            events.append(delivery_event(mail, given, done, elapsed))
            if outcome.complaint is not None:
                events.append(complaint_event(mail, given, outcome.complaint, self._clock()))
        for event in events:
            self.feed.put(sns_envelope(event, topic_arn=self.topic_arn, at=self._clock()))
        log.info(
            "sandbox accepted %s for %d recipient(s): %s",
            message_id,
            len(seen),
            ", ".join(e["eventType"] for e in events[1:]),
        )
        return message_id

    def _deliver(self, address: str, raw: bytes, return_path: str) -> None:
        """Store a copy as a final-delivery MTA would: Return-Path on top, durably,
        because the copy must survive a crash once the MessageId is returned."""
        newline = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
        data = b"Return-Path: <" + return_path.encode("utf-8", "replace") + b">" + newline + raw
        maildir.add(mailbox_dir(self.root, address), data)


def read_events(feed: Feed, limit: int = 1000) -> list[dict[str, Any]]:
    """The SES events waiting in a feed, unwrapped (for tests and `--sandbox` tooling)."""
    return [json.loads(json.loads(item.body)["Message"]) for item in feed.receive(limit)]
