"""Queue bodies (pure): what arrives from SQS or SNS, unwrapped down to SES's payload.

A body is an SNS envelope (`Type: Notification`, the SES JSON as a string in
`Message`), raw SES JSON (SNS raw message delivery), or an SQS record saved for
replay (the body under `Body`). SNS also sends subscription confirmations and SES a
one-off setup message; those are reported, not errors. What is inside is SES's and
is parsed by feedback.events.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from feedback.events import (
    SUBSCRIPTION_SUCCEEDED,
    FeedbackEvent,
    ParseError,
    json_type,
    loads,
    opt_str,
    parse_ses,
    parse_time,
)

__all__ = [
    "SES_SETUP_MESSAGE",
    "BodyKind",
    "ParsedBody",
    "parse_body",
    "parse_document",
]

# SES publishes this plain-text (not JSON) notification once, when an SNS topic is
# attached to a configuration set as an event destination.
SES_SETUP_MESSAGE = "Successfully validated SNS topic for Amazon SES event publishing."


class BodyKind(enum.StrEnum):
    """What an SQS/SNS body turned out to be; only EVENTS carries feedback."""

    EVENTS = "events"
    SUBSCRIPTION_CONFIRMATION = "subscription_confirmation"
    UNSUBSCRIBE_CONFIRMATION = "unsubscribe_confirmation"


@dataclass(frozen=True, kw_only=True)
class ParsedBody:
    kind: BodyKind
    events: list[FeedbackEvent] = field(default_factory=list)
    sns_message_id: str | None = None
    topic_arn: str | None = None
    subscribe_url: str | None = None  # confirmations: where to confirm (the caller only logs it)
    note: str | None = None  # text of a setup/confirmation message, for the log
    envelope: Mapping[str, Any] | None = field(default=None, repr=False)  # SNS envelope, for signatures


def parse_body(body: str | bytes, *, received: datetime | None = None) -> ParsedBody:
    """Parse an SQS message body (SNS envelope, raw SES JSON, or a saved SQS record).

    `received` is when the body arrived: the time of last resort for an event that
    carries no timestamp of its own (see `parse_ses`).
    """
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"body is not UTF-8 ({exc})") from None
    if not isinstance(body, str):
        raise ParseError(f"body must be str or bytes, not {type(body).__name__}")
    return parse_document(_load_json(body, "body"), received=received, text=body)


def parse_document(
    doc: Any, *, received: datetime | None = None, text: str | None = None, _depth: int = 0
) -> ParsedBody:
    """Like parse_body, for a body already decoded from JSON (replay files, tests);
    `text`, when given, is the JSON text `doc` was decoded from."""
    if not isinstance(doc, dict):
        raise ParseError(f"body is a JSON {json_type(doc)}, expected an object")
    if "Type" in doc and ("Message" in doc or "TopicArn" in doc or "MessageId" in doc):
        return _parse_sns(doc, received)
    if "eventType" in doc or "notificationType" in doc:
        return _parse_ses_document(doc, received, text)
    inner = doc.get("Body", doc.get("body"))
    if inner is not None and _depth == 0:
        if not isinstance(inner, str):
            raise ParseError(f"SQS record Body is a JSON {json_type(inner)}, expected a string")
        return parse_document(_load_json(inner, "SQS record Body"), received=received, text=inner, _depth=1)
    keys = ", ".join(sorted(map(str, doc))[:12]) or "none"
    raise ParseError(
        "JSON object is neither an SNS envelope (Type/Message), an SES event "
        f"(eventType/notificationType) nor an SQS record (Body); its keys: {keys}"
    )


# --------------------------------------------------------------------------- SNS / SES documents


def _parse_sns(doc: dict[str, Any], received: datetime | None) -> ParsedBody:
    sns_type = doc.get("Type")
    ids = {"sns_message_id": opt_str(doc.get("MessageId")), "topic_arn": opt_str(doc.get("TopicArn"))}
    if sns_type == "Notification":
        message = doc.get("Message")
        if not isinstance(message, str):
            raise ParseError("SNS Notification has no Message string")
        text = message.strip()
        if text == SES_SETUP_MESSAGE:
            return ParsedBody(kind=BodyKind.EVENTS, note=text, envelope=doc, **ids)
        if not text.startswith("{"):
            raise ParseError(f"SNS Message is not JSON: {_clip(text)!r}")
        inner = _load_json(text, "SNS Message")
        if not isinstance(inner, dict):
            raise ParseError(f"SNS Message is a JSON {json_type(inner)}, expected an SES event object")
        if "eventType" not in inner and "notificationType" not in inner:
            raise ParseError("SNS Message is JSON but not an SES event (no eventType/notificationType)")
        parsed = _parse_ses_document(inner, parse_time(doc.get("Timestamp")) or received, text)
        return ParsedBody(kind=parsed.kind, events=parsed.events, note=parsed.note, envelope=doc, **ids)
    if sns_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        kind = (
            BodyKind.SUBSCRIPTION_CONFIRMATION
            if sns_type == "SubscriptionConfirmation"
            else BodyKind.UNSUBSCRIBE_CONFIRMATION
        )
        return ParsedBody(
            kind=kind,
            subscribe_url=opt_str(doc.get("SubscribeURL")),
            note=opt_str(doc.get("Message")),
            envelope=doc,
            **ids,
        )
    raise ParseError(f"unknown SNS message Type {sns_type!r}")


def _parse_ses_document(doc: dict[str, Any], fallback_time: datetime | None, text: str | None) -> ParsedBody:
    if doc.get("notificationType") == SUBSCRIPTION_SUCCEEDED:
        return ParsedBody(kind=BodyKind.EVENTS, note=opt_str(doc.get("message")) or SUBSCRIPTION_SUCCEEDED)
    return ParsedBody(kind=BodyKind.EVENTS, events=parse_ses(doc, fallback_time=fallback_time, text=text))


def _load_json(text: str, what: str) -> Any:
    if not text.strip():
        raise ParseError(f"{what} is empty")
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos}): {_clip(text)!r}") from None
    except RecursionError:
        raise ParseError(f"{what} is JSON nested too deeply") from None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
