"""SES feedback parsing (pure): one SES payload in, one normalised event per recipient out.

SES speaks two dialects (identity notifications keyed by `notificationType`, event
publishing keyed by `eventType`); feedback.bodies unwraps the queue body around them
(SNS envelope, raw delivery, saved SQS record). Everything downstream (policy, store,
reports) sees only `FeedbackEvent`, so the dialects and SES's habit of adding fields
stop here.

Three rules shape this module:

* Anything that cannot be understood is a `ParseError` whose message says what was
  wrong, so the consumer can park the body in the dead-letter table and an operator
  can read why. An SES event *type* we do not know is not an error: it becomes one
  `EventKind.UNKNOWN` event carrying the raw payload, so new SES features are logged
  rather than dead-lettered.
* Bounce type and subtype, diagnostic code and status stay as typed fields; the
  suppression policy depends on all of them.
* `dedupe_key` is derived from SES's own content, never from SNS/SQS ids, so the same
  SES event redelivered by SQS, re-published by SNS, or received through both an
  identity notification and a configuration-set destination maps to the same key.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import orjson

from relay.addresses import AddressError, normalise
from relay.vocabulary import Tag

__all__ = [
    "SUBSCRIPTION_SUCCEEDED",
    "EventKind",
    "FeedbackEvent",
    "ParseError",
    "json_type",
    "loads",
    "opt_str",
    "parse_ses",
    "parse_time",
]


class ParseError(ValueError):
    """A feedback body that cannot be understood; the message says what was wrong."""


class EventKind(enum.StrEnum):
    SEND = "send"
    DELIVERY = "delivery"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    REJECT = "reject"
    DELIVERY_DELAY = "delivery_delay"
    OPEN = "open"
    CLICK = "click"
    RENDERING_FAILURE = "rendering_failure"
    SUBSCRIPTION = "subscription"
    UNKNOWN = "unknown"


# SES type name -> (kind, name of the object holding its details).
_TYPES: dict[str, tuple[EventKind, str]] = {
    "Send": (EventKind.SEND, "send"),
    "Delivery": (EventKind.DELIVERY, "delivery"),
    "Bounce": (EventKind.BOUNCE, "bounce"),
    "Complaint": (EventKind.COMPLAINT, "complaint"),
    "Reject": (EventKind.REJECT, "reject"),
    "DeliveryDelay": (EventKind.DELIVERY_DELAY, "deliveryDelay"),
    "Open": (EventKind.OPEN, "open"),
    "Click": (EventKind.CLICK, "click"),
    "Rendering Failure": (EventKind.RENDERING_FAILURE, "failure"),
    "RenderingFailure": (EventKind.RENDERING_FAILURE, "failure"),  # as some SDK enums spell it
    "Subscription": (EventKind.SUBSCRIPTION, "subscription"),
}

# Identity-notification setup message: confirms the topic works, carries no feedback.
SUBSCRIPTION_SUCCEEDED = "AmazonSnsSubscriptionSucceeded"


@dataclass(frozen=True, kw_only=True)
class FeedbackEvent:
    """One SES event for one recipient (or, for UNKNOWN, for the whole message)."""

    kind: EventKind
    recipient: str | None  # normalised; lower-cased raw text when it does not normalise
    ses_message_id: str
    timestamp: datetime  # aware UTC: the event's own time, else mail.timestamp, else SNS's, else receipt
    dedupe_key: str
    ses_type: str  # eventType / notificationType exactly as SES sent it
    feedback_id: str | None = None
    # bounce / delay details (per recipient)
    bounce_type: str | None = None  # Permanent | Transient | Undetermined
    bounce_subtype: str | None = None  # General, NoEmail, MailboxFull, ...
    diagnostic_code: str | None = None
    status: str | None = None  # enhanced status code, e.g. "5.1.1"
    action: str | None = None  # DSN action, e.g. "failed"
    reporting_mta: str | None = None
    remote_mta_ip: str | None = None
    smtp_response: str | None = None  # Delivery
    delay_type: str | None = None  # DeliveryDelay
    expiration_time: datetime | None = None  # DeliveryDelay: when SES stops retrying
    # complaint
    complaint_feedback_type: str | None = None  # abuse, fraud, not-spam, ...
    complaint_subtype: str | None = None  # e.g. OnAccountSuppressionList
    # reject / rendering failure
    reject_reason: str | None = None
    rendering_error: str | None = None
    template_name: str | None = None
    # open / click
    click_link: str | None = None
    user_agent: str | None = None
    ip_address: str | None = None  # of the opener/clicker, not of the sender
    # subscription (SES list management)
    contact_list: str | None = None
    unsubscribe_all: bool = False  # newTopicPreferences.unsubscribeAll
    unsubscribed_topics: tuple[str, ...] = ()  # topics newly set to OptOut
    subscription_source: str | None = None  # e.g. UnsubscribeHeader
    # the message
    source_ip: str | None = None  # where the submission came from (mail.sourceIp / ses:source-ip)
    from_address: str | None = None  # bare address of commonHeaders.from[0], else mail.source
    subject: str | None = None
    configuration_set: str | None = None
    tags: dict[str, list[str]] = field(default_factory=dict, hash=False)
    message_class: str | None = None  # tag message-class
    submission_id: str | None = None  # tag submission-id
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)
    # `raw` as the JSON text it was decoded from, when the parser was given that text:
    # the events log keeps it as it came rather than encoding `raw` once more.
    raw_json: str | None = field(default=None, compare=False, repr=False)

    @property
    def unsubscribed(self) -> bool:
        """A Subscription event that takes the recipient off something."""
        return self.unsubscribe_all or bool(self.unsubscribed_topics)


def parse_ses(
    payload: Mapping[str, Any], *, fallback_time: datetime | None = None, text: str | None = None
) -> list[FeedbackEvent]:
    """Turn one SES payload (either dialect) into one event per recipient.

    `text`: the JSON text `payload` was decoded from, if the caller has it (kept as the
    events' `raw_json`).

    The event's time is its own (`bounce.timestamp`, ...), else `mail.timestamp`, else
    `fallback_time` (the SNS envelope's `Timestamp`, else when the body was received),
    else the current time. Minimal payloads (hand-made events, other libraries' test
    fixtures) carry no timestamp at all, and a bounce must not be lost for that.
    """
    type_name = payload.get("eventType", payload.get("notificationType"))
    if not isinstance(type_name, str) or not type_name.strip():
        raise ParseError("SES payload has no eventType or notificationType string")
    if type_name == SUBSCRIPTION_SUCCEEDED:
        return []
    mail = payload.get("mail")
    if not isinstance(mail, dict):
        raise ParseError(f"SES {type_name} event has no mail object")
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not message_id.strip():
        raise ParseError(f"SES {type_name} event has no mail.messageId")

    kind, detail_key = _TYPES.get(type_name, (EventKind.UNKNOWN, _guess_detail_key(type_name)))
    detail = payload.get(detail_key)
    if detail is None:
        detail = {}
    if not isinstance(detail, dict):
        raise ParseError(f"SES {type_name} event: {detail_key} is a JSON {json_type(detail)}, not an object")

    own_time = parse_time(detail.get("timestamp")) or parse_time(mail.get("timestamp"))
    timestamp = own_time or fallback_time or datetime.now(UTC)
    # The dedupe key must be the same on every redelivery: an SES time is, a receipt
    # time is not, so without one the key is anchored on the payload's content.
    anchor = own_time.isoformat() if own_time else f"content:{_digest(payload)}"

    common = _common(payload, mail, message_id.strip(), type_name, timestamp)
    common["anchor"] = anchor
    common["raw_json"] = text
    if kind is EventKind.UNKNOWN:
        return [_event(kind, None, common, {}, discriminator=type_name)]
    events = _BUILDERS[kind](kind, type_name, detail, mail, common)
    # An address listed twice (in destination, or bounced twice in one report) is one event.
    unique = {e.dedupe_key: e for e in reversed(events)}
    return [e for e in events if unique[e.dedupe_key] is e]


# --------------------------------------------------------------------------- per-kind builders

_Builder = Callable[[EventKind, str, dict[str, Any], dict[str, Any], dict[str, Any]], list[FeedbackEvent]]


def _build_bounce(
    kind: EventKind, type_name: str, detail: dict[str, Any], mail: dict[str, Any], common: dict[str, Any]
) -> list[FeedbackEvent]:
    bounce_type = detail.get("bounceType")
    if not isinstance(bounce_type, str) or not bounce_type.strip():
        raise ParseError(f"SES {type_name} event {common['ses_message_id']} has no bounce.bounceType")
    shared = {
        "bounce_type": bounce_type.strip(),
        **_texts(detail, feedback_id="feedbackId", bounce_subtype="bounceSubType",
                 reporting_mta="reportingMTA", remote_mta_ip="remoteMtaIp"),
    }  # fmt: skip
    return _per_recipient(
        kind, type_name, detail, "bouncedRecipients", common, shared,
        diagnostic_code="diagnosticCode", status="status", action="action",
    )  # fmt: skip


def _build_complaint(
    kind: EventKind, type_name: str, detail: dict[str, Any], mail: dict[str, Any], common: dict[str, Any]
) -> list[FeedbackEvent]:
    shared = _texts(
        detail, feedback_id="feedbackId", complaint_feedback_type="complaintFeedbackType",
        complaint_subtype="complaintSubType", user_agent="userAgent",
    )  # fmt: skip
    return _per_recipient(kind, type_name, detail, "complainedRecipients", common, shared)


def _build_delivery(
    kind: EventKind, type_name: str, detail: dict[str, Any], mail: dict[str, Any], common: dict[str, Any]
) -> list[FeedbackEvent]:
    shared = _texts(
        detail, smtp_response="smtpResponse", reporting_mta="reportingMTA", remote_mta_ip="remoteMtaIp"
    )
    recipients = _address_list(detail.get("recipients"), f"SES {type_name} delivery.recipients", common)
    return [_event(kind, r, common, shared) for r in recipients]


def _build_delay(
    kind: EventKind, type_name: str, detail: dict[str, Any], mail: dict[str, Any], common: dict[str, Any]
) -> list[FeedbackEvent]:
    shared = {
        **_texts(detail, delay_type="delayType", reporting_mta="reportingMTA"),
        "expiration_time": parse_time(detail.get("expirationTime")),
    }
    return _per_recipient(
        kind, type_name, detail, "delayedRecipients", common, shared,
        diagnostic_code="diagnosticCode", status="status",
    )  # fmt: skip


def _build_per_message(
    kind: EventKind, type_name: str, detail: dict[str, Any], mail: dict[str, Any], common: dict[str, Any]
) -> list[FeedbackEvent]:
    """Send, Reject, Rendering Failure, Open, Click, Subscription: SES reports these per
    message (opens and clicks are not attributed to a recipient), so fan out over
    mail.destination."""
    extra: dict[str, Any] = {}
    discriminator = ""
    if kind is EventKind.REJECT:
        extra = _texts(detail, reject_reason="reason")
    elif kind is EventKind.RENDERING_FAILURE:
        extra = _texts(detail, rendering_error="errorMessage", template_name="templateName")
    elif kind in (EventKind.OPEN, EventKind.CLICK):
        extra = _texts(detail, user_agent="userAgent", ip_address="ipAddress")
        if kind is EventKind.CLICK:
            extra["click_link"] = opt_str(detail.get("link"))
            discriminator = extra["click_link"] or ""
    elif kind is EventKind.SUBSCRIPTION:
        extra.update(_subscription_fields(detail))
    recipients = _address_list(mail.get("destination"), f"SES {type_name} mail.destination", common)
    return [_event(kind, r, common, extra, discriminator=discriminator) for r in recipients]


def _subscription_fields(detail: dict[str, Any]) -> dict[str, Any]:
    new = detail.get("newTopicPreferences")
    old = detail.get("oldTopicPreferences")
    new = new if isinstance(new, dict) else {}
    old = old if isinstance(old, dict) else {}
    newly_out = _opted_out(new) - _opted_out(old)
    return {
        "contact_list": opt_str(detail.get("contactList")),
        "subscription_source": opt_str(detail.get("source")),
        "unsubscribe_all": new.get("unsubscribeAll") is True,
        "unsubscribed_topics": tuple(sorted(newly_out)),
    }


def _opted_out(prefs: dict[str, Any]) -> set[str]:
    statuses = prefs.get("topicSubscriptionStatus")
    if not isinstance(statuses, list):
        return set()
    return {
        s["topicName"]
        for s in statuses
        if isinstance(s, dict)
        and isinstance(s.get("topicName"), str)
        and str(s.get("subscriptionStatus", "")).replace("_", "").lower() == "optout"
    }


_BUILDERS: dict[EventKind, _Builder] = {
    EventKind.BOUNCE: _build_bounce,
    EventKind.COMPLAINT: _build_complaint,
    EventKind.DELIVERY: _build_delivery,
    EventKind.DELIVERY_DELAY: _build_delay,
    EventKind.SEND: _build_per_message,
    EventKind.REJECT: _build_per_message,
    EventKind.RENDERING_FAILURE: _build_per_message,
    EventKind.OPEN: _build_per_message,
    EventKind.CLICK: _build_per_message,
    EventKind.SUBSCRIPTION: _build_per_message,
}


# --------------------------------------------------------------------------- shared pieces


def _common(
    payload: Mapping[str, Any], mail: dict[str, Any], message_id: str, type_name: str, timestamp: datetime
) -> dict[str, Any]:
    tags = _tags(mail.get("tags"))
    headers = mail.get("commonHeaders")
    headers = headers if isinstance(headers, dict) else {}
    from_list = headers.get("from")
    from_raw = opt_str(from_list[0]) if isinstance(from_list, list) and from_list else None
    from_raw = from_raw or opt_str(mail.get("source"))
    return {
        "ses_message_id": message_id,
        "ses_type": type_name,
        "timestamp": timestamp,
        "source_ip": opt_str(mail.get("sourceIp")) or _first(tags, "ses:source-ip"),
        "from_address": _address(from_raw) if from_raw else None,
        "subject": opt_str(headers.get("subject")),
        "configuration_set": _first(tags, "ses:configuration-set"),
        "tags": tags,
        "message_class": _first(tags, Tag.MESSAGE_CLASS),
        "submission_id": _first(tags, Tag.SUBMISSION_ID),
        "raw": payload,
    }


def _event(
    kind: EventKind,
    raw_recipient: str | None,
    common: dict[str, Any],
    fields: dict[str, Any],
    *,
    discriminator: str = "",
) -> FeedbackEvent:
    recipient = _address(raw_recipient) if raw_recipient is not None else None
    common = dict(common)
    own_anchor = common.pop("anchor")
    anchor = fields.get("feedback_id") or own_anchor
    parts = [kind.value, common["ses_message_id"], anchor, recipient or "", discriminator]
    dedupe_key = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return FeedbackEvent(kind=kind, recipient=recipient, dedupe_key=dedupe_key, **common, **fields)


def _texts(obj: dict[str, Any], **keys: str) -> dict[str, Any]:
    """Optional text fields of one SES object, each under its event field's name
    (`field="sesKey"`): SES leaves most of them out or empty now and then."""
    return {name: opt_str(obj.get(key)) for name, key in keys.items()}


def _per_recipient(
    kind: EventKind, type_name: str, detail: dict[str, Any], list_key: str, common: dict[str, Any],
    shared: dict[str, Any], **own_keys: str,
) -> list[FeedbackEvent]:  # fmt: skip
    """One event per object of the detail's recipients list (bounced, complained, delayed):
    the fields the whole report shares, then the text fields of the recipient's own object."""
    return [
        _event(kind, item["emailAddress"], common, {**shared, **_texts(item, **own_keys)})
        for item in _recipient_objects(detail, list_key, type_name, common)
    ]


def _recipient_objects(
    detail: dict[str, Any], key: str, type_name: str, common: dict[str, Any]
) -> list[dict[str, Any]]:
    where = f"SES {type_name} event {common['ses_message_id']}"
    items = detail.get(key)
    if not isinstance(items, list) or not items:
        raise ParseError(f"{where} has no {key}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError(f"{where}: {key}[{i}] is a JSON {json_type(item)}, not an object")
        address = item.get("emailAddress")
        if not isinstance(address, str) or not address.strip():
            raise ParseError(f"{where}: {key}[{i}] has no emailAddress")
    return items


def _address_list(value: Any, what: str, common: dict[str, Any]) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ParseError(f"{what} is missing or empty (message {common['ses_message_id']})")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ParseError(f"{what}[{i}] is not an address (message {common['ses_message_id']})")
    return value


@functools.lru_cache(maxsize=1 << 15)
def _address(raw: str) -> str:
    """Normalise as everywhere else; a display-name form ("Name <a@b>") is reduced to
    the address first. What does not normalise is kept, lower-cased, so the event is
    still recorded and visible rather than dropped. Cached: the same few senders and
    recipients come back event after event, and normalising (IDNA) is the parser's
    costliest step."""
    text = raw.strip()
    if "<" not in text:
        try:
            return normalise(text)
        except AddressError:
            return text.lower()
    start, end = text.rfind("<"), text.rfind(">")
    if 0 <= start < end and "<" not in text[start + 1 : end]:  # "Name <a@b>": the common case
        with contextlib.suppress(AddressError):
            return normalise(text[start + 1 : end])
    if "<" in text:
        _, bare = parseaddr(text)
        if bare:
            try:
                return normalise(bare)
            except AddressError:
                return bare.strip().lower()
    return text.lower()


def _tags(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, vals in value.items():
        if not isinstance(key, str):
            continue
        if isinstance(vals, str):
            vals = [vals]
        if isinstance(vals, list):
            out[key] = [v for v in vals if isinstance(v, str)]
    return out


def _first(tags: dict[str, list[str]], key: str) -> str | None:
    values = tags.get(key)
    if not values:
        return None
    return values[0].strip() or None


def parse_time(value: Any) -> datetime | None:
    """An ISO time field as aware UTC, or None when it is absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def loads(text: str | bytes) -> Any:
    """Decode JSON text: orjson (several times the standard library's speed), and where
    orjson refuses (NaN, integers past 64 bits, lone surrogates, malformed text) the
    standard library's reading, so what decodes and every error message stay its own."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def opt_str(value: Any) -> str | None:
    """A JSON field as stripped text, or None when it is absent, empty or not a string."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _guess_detail_key(type_name: str) -> str:
    """SES names each detail object after its type in camelCase ("DeliveryDelay" ->
    "deliveryDelay"); use that for types we do not know, to find a timestamp."""
    compact = "".join(type_name.split())
    return compact[:1].lower() + compact[1:]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
