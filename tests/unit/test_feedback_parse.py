"""Parsing real SES payloads (both dialects, every wrapping) into FeedbackEvents.

Fixtures in tests/fixtures/ses/ follow the shapes of AWS's documented examples
(event publishing and identity notifications), with our own tags added.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from feedback.bodies import SES_SETUP_MESSAGE, BodyKind, parse_body, parse_document
from feedback.events import EventKind, FeedbackEvent, ParseError, parse_ses
from tests.conftest import FIXTURES

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"

EVENT_FIXTURES = sorted(
    p.name for p in FIXTURES.glob("*.json") if p.name.startswith(("event_", "notification_"))
)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def sns(payload: dict[str, Any] | str, message_id: str = "6a0a2f5e-1b1c-5d3e-9f40-1234567890ab") -> str:
    message = payload if isinstance(payload, str) else json.dumps(payload)
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": TOPIC,
            "Message": message,
            "Timestamp": "2024-03-05T10:41:03.000Z",
            "SignatureVersion": "2",
            "Signature": "c2lnbmF0dXJl",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def sqs_record(body: str, key: str = "Body") -> str:
    return json.dumps(
        {"MessageId": "3f1c1d9e-0000-4000-8000-000000000001", "ReceiptHandle": "AQEB...", key: body}
    )


def summary(events: list[FeedbackEvent]) -> list[tuple[str, str | None, str]]:
    return [(e.kind.value, e.recipient, e.dedupe_key) for e in events]


# --------------------------------------------------------------------------- wrappings


@pytest.mark.parametrize("name", EVENT_FIXTURES)
def test_every_wrapping_of_a_fixture_gives_the_same_events(name: str) -> None:
    raw_text = (FIXTURES / name).read_text(encoding="utf-8")
    payload = json.loads(raw_text)
    direct = parse_body(raw_text)
    assert direct.kind is BodyKind.EVENTS
    wrapped = [
        parse_body(raw_text.encode("utf-8")),
        parse_body(sns(payload)),
        parse_body(sqs_record(sns(payload))),
        parse_body(sqs_record(raw_text, key="body")),
        parse_document(payload),
    ]
    for other in wrapped:
        assert summary(other.events) == summary(direct.events)
    assert summary(parse_ses(payload)) == summary(direct.events)


def test_sns_envelope_ids_and_envelope_are_kept() -> None:
    text = (FIXTURES / "sns_notification_bounce.json").read_text(encoding="utf-8")
    parsed = parse_body(text)
    assert parsed.kind is BodyKind.EVENTS
    assert parsed.sns_message_id == "0f5b8c4e-3d2a-5b1c-9e8f-7a6b5c4d3e2f"
    assert parsed.topic_arn == TOPIC
    assert parsed.envelope is not None and parsed.envelope["SignatureVersion"] == "1"
    [event] = parsed.events
    assert (event.kind, event.recipient) == (EventKind.BOUNCE, "nomailbox@example.com")
    assert (event.bounce_type, event.bounce_subtype) == ("Permanent", "NoEmail")


def test_raw_delivery_has_no_sns_ids() -> None:
    parsed = parse_body((FIXTURES / "event_delivery.json").read_text(encoding="utf-8"))
    assert parsed.sns_message_id is None and parsed.topic_arn is None and parsed.envelope is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("sns_subscription_confirmation.json", BodyKind.SUBSCRIPTION_CONFIRMATION),
        ("sns_unsubscribe_confirmation.json", BodyKind.UNSUBSCRIBE_CONFIRMATION),
    ],
)
def test_sns_confirmations_are_reported_not_errors(name: str, kind: BodyKind) -> None:
    parsed = parse_body((FIXTURES / name).read_text(encoding="utf-8"))
    assert parsed.kind is kind
    assert parsed.events == []
    assert parsed.topic_arn == TOPIC
    assert parsed.sns_message_id
    assert parsed.subscribe_url and parsed.subscribe_url.startswith("https://sns.eu-west-1.amazonaws.com/")
    assert parsed.note and "subscri" in parsed.note


def test_ses_identity_setup_message_yields_no_events() -> None:
    payload = load("notification_subscription_succeeded.json")
    for parsed in (parse_body(json.dumps(payload)), parse_body(sns(payload))):
        assert parsed.kind is BodyKind.EVENTS
        assert parsed.events == []
        assert parsed.note and "successfully subscribed" in parsed.note


def test_ses_event_publishing_setup_text_yields_no_events() -> None:
    parsed = parse_body(sns(SES_SETUP_MESSAGE))
    assert parsed.kind is BodyKind.EVENTS
    assert parsed.events == []
    assert parsed.note == SES_SETUP_MESSAGE


# --------------------------------------------------------------------------- field by field


def test_event_publishing_bounce_field_by_field() -> None:
    payload = load("event_bounce_permanent.json")
    [e] = parse_body(json.dumps(payload)).events
    assert e.kind is EventKind.BOUNCE
    assert e.ses_type == "Bounce"
    assert e.recipient == "nobody.here@example.net"  # normalised from Nobody.Here@Example.NET
    assert e.ses_message_id == "0102018e0f3b8a11-2c4d6e8f-1a3b-4c5d-8e9f-0a1b2c3d4e5f-000000"
    assert e.timestamp == datetime(2024, 3, 5, 10, 41, 2, 669000, tzinfo=UTC)  # bounce.timestamp
    assert e.timestamp.utcoffset() is not None
    assert e.feedback_id == "0100018e0f3b9c2d-5a1f7e44-8c2b-4b8e-9f0a-2d6c1e7b3a90-000000"
    assert e.bounce_type == "Permanent"
    assert e.bounce_subtype == "General"
    assert e.diagnostic_code is not None and e.diagnostic_code.startswith("smtp; 550 5.1.1 ")
    assert e.status == "5.1.1"
    assert e.action == "failed"
    assert e.reporting_mta == "dsn; a8-30.smtp-out.amazonses.com"
    assert e.remote_mta_ip == "203.0.113.25"
    assert e.source_ip == "192.0.2.10"  # from the ses:source-ip tag
    assert e.from_address == "orders@shop.example.com"  # display name dropped
    assert e.subject == "Your order #10442 has shipped"
    assert e.configuration_set == "tx"
    assert e.message_class == "transactional"
    assert e.submission_id == "01HR5Q2W7XK3M9D8C6B4A2Z0YV"
    assert e.tags["ses:from-domain"] == ["shop.example.com"]
    assert e.raw == payload
    assert e.complaint_feedback_type is None and e.reject_reason is None and e.click_link is None
    assert len(e.dedupe_key) == 64


def test_identity_notification_bounce_with_dsn() -> None:
    [e] = parse_body(json.dumps(load("notification_bounce_dsn.json"))).events
    assert e.ses_type == "Bounce"
    assert e.recipient == "jane@example.org"  # only the bounced one of three destinations
    assert e.source_ip == "192.0.2.44"  # mail.sourceIp
    assert e.from_address == "john@app.example.com"
    assert e.subject == "Hello"
    assert e.diagnostic_code == "smtp; 550 5.1.1 <jane@example.org>... User unknown"
    assert e.status == "5.1.1"
    assert e.remote_mta_ip == "203.0.113.40"
    # identity notifications carry no tags
    assert e.tags == {} and e.message_class is None and e.configuration_set is None


def test_identity_notification_bounce_without_dsn_has_two_recipients() -> None:
    events = parse_body(json.dumps(load("notification_bounce_no_dsn.json"))).events
    assert [e.recipient for e in events] == ["jane@example.org", "richard@example.org"]
    assert all(e.diagnostic_code is None and e.status is None for e in events)
    assert all(e.from_address == "john@app.example.com" for e in events)  # mail.source, no headers
    assert len({e.dedupe_key for e in events}) == 2


def test_multi_recipient_bounce_one_event_each_with_its_own_diagnostic() -> None:
    events = parse_body(json.dumps(load("event_bounce_multi.json"))).events
    assert [e.recipient for e in events] == [
        "gone@example.org",
        "closed@example.org",
        '"odd address"@example.org',  # does not normalise: kept, lower-cased
    ]
    assert [e.status for e in events] == ["5.1.1", "5.2.1", None]
    assert "does not exist" in (events[0].diagnostic_code or "")
    assert "disabled" in (events[1].diagnostic_code or "")
    assert {e.feedback_id for e in events} == {"0100018e13a0c7b1-77e0d2c4-3f51-4a8e-b1d2-9c8e7f6a5b4c-000000"}
    assert len({e.dedupe_key for e in events}) == 3
    assert all(e.message_class == "list" for e in events)


def test_transient_bounce_notification() -> None:
    [e] = parse_body(json.dumps(load("notification_bounce_transient.json"))).events
    assert (e.bounce_type, e.bounce_subtype, e.status) == ("Transient", "MailboxFull", "5.2.2")


@pytest.mark.parametrize("name", ["event_complaint.json", "notification_complaint.json"])
def test_complaint_in_both_dialects(name: str) -> None:
    payload = load(name)
    [e] = parse_body(json.dumps(payload)).events
    assert e.kind is EventKind.COMPLAINT
    assert e.complaint_feedback_type == "abuse"
    assert e.feedback_id == payload["complaint"]["feedbackId"]
    assert e.user_agent == payload["complaint"]["userAgent"]
    assert e.timestamp == datetime.fromisoformat(payload["complaint"]["timestamp"])
    assert e.recipient == payload["complaint"]["complainedRecipients"][0]["emailAddress"]


def test_complaint_subtype_on_account_suppression_list() -> None:
    [e] = parse_body(json.dumps(load("notification_complaint_suppressed.json"))).events
    assert e.complaint_subtype == "OnAccountSuppressionList"
    assert e.complaint_feedback_type is None


@pytest.mark.parametrize("name", ["event_delivery.json", "notification_delivery.json"])
def test_delivery_in_both_dialects(name: str) -> None:
    payload = load(name)
    [e] = parse_body(json.dumps(payload)).events
    assert e.kind is EventKind.DELIVERY
    assert e.recipient == payload["delivery"]["recipients"][0]
    assert e.smtp_response == payload["delivery"]["smtpResponse"].strip()
    assert e.timestamp == datetime.fromisoformat(payload["delivery"]["timestamp"])
    assert e.feedback_id is None


def test_send_fans_out_over_destinations_at_mail_timestamp() -> None:
    events = parse_body(json.dumps(load("event_send.json"))).events
    assert [e.kind for e in events] == [EventKind.SEND, EventKind.SEND]
    assert [e.recipient for e in events] == ["first@example.com", "second@example.com"]
    assert all(e.timestamp == datetime(2024, 3, 5, 10, 40, 50, 645000, tzinfo=UTC) for e in events)
    assert events[0].dedupe_key != events[1].dedupe_key


def test_reject() -> None:
    [e] = parse_body(json.dumps(load("event_reject.json"))).events
    assert (e.kind, e.recipient, e.reject_reason) == (EventKind.REJECT, "boss@example.com", "Bad content")


def test_rendering_failure() -> None:
    [e] = parse_body(json.dumps(load("event_rendering_failure.json"))).events
    assert e.kind is EventKind.RENDERING_FAILURE
    assert e.ses_type == "Rendering Failure"
    assert e.rendering_error == "Attribute 'firstName' is not present in the rendering data."
    assert e.template_name == "WelcomeTemplate"
    assert e.message_class is None and e.configuration_set == "tx"


def test_delivery_delay() -> None:
    [e] = parse_body(json.dumps(load("event_delivery_delay.json"))).events
    assert e.kind is EventKind.DELIVERY_DELAY
    assert e.delay_type == "TransientCommunicationFailure"
    assert e.expiration_time == datetime(2024, 3, 10, 14, 15, 40, 914000, tzinfo=UTC)
    assert (e.status, e.diagnostic_code) == ("4.4.1", "smtp; 421 4.4.1 Unable to connect to remote host")
    assert e.timestamp == datetime(2024, 3, 10, 0, 25, 40, 95000, tzinfo=UTC)


def test_open_and_click() -> None:
    [opened] = parse_body(json.dumps(load("event_open.json"))).events
    [clicked] = parse_body(json.dumps(load("event_click.json"))).events
    assert opened.kind is EventKind.OPEN and clicked.kind is EventKind.CLICK
    assert opened.recipient == clicked.recipient == "reader@example.com"
    assert opened.ip_address == "198.51.100.7"
    assert opened.user_agent and "iPhone" in opened.user_agent
    assert clicked.click_link == "https://news.example.com/march?utm_source=ses"
    assert clicked.timestamp == datetime(2024, 3, 6, 9, 3, 25, 570000, tzinfo=UTC)


def test_subscription_topic_opt_out() -> None:
    [e] = parse_body(json.dumps(load("event_subscription.json"))).events
    assert e.kind is EventKind.SUBSCRIPTION
    assert e.recipient == "leaving@example.com"
    assert e.contact_list == "Customers"
    assert e.subscription_source == "UnsubscribeHeader"
    assert e.unsubscribe_all is False
    assert e.unsubscribed_topics == ("ProductUpdates",)  # Security stayed OptIn
    assert e.unsubscribed


def test_subscription_unsubscribe_all_and_opt_in() -> None:
    payload = load("event_subscription.json")
    payload["subscription"]["newTopicPreferences"]["unsubscribeAll"] = True
    [e] = parse_ses(payload)
    assert e.unsubscribe_all and e.unsubscribed

    opt_in = load("event_subscription.json")
    new, old = (opt_in["subscription"][k] for k in ("newTopicPreferences", "oldTopicPreferences"))
    new["topicSubscriptionStatus"], old["topicSubscriptionStatus"] = (
        old["topicSubscriptionStatus"],
        new["topicSubscriptionStatus"],
    )
    [e] = parse_ses(opt_in)
    assert e.unsubscribed_topics == () and not e.unsubscribe_all and not e.unsubscribed


def test_unknown_event_type_is_one_unknown_event_with_raw_payload() -> None:
    payload = {
        "eventType": "Teleport",
        "mail": {
            "timestamp": "2024-03-05T10:40:00.000Z",
            "messageId": "m-1",
            "destination": ["a@example.com"],
        },
        "teleport": {"timestamp": "2024-03-05T11:00:00.000+01:00", "where": "Mars"},
    }
    [e] = parse_body(json.dumps(payload)).events
    assert e.kind is EventKind.UNKNOWN
    assert e.recipient is None
    assert e.ses_type == "Teleport"
    assert e.raw == payload
    assert e.timestamp == datetime(2024, 3, 5, 10, 0, tzinfo=UTC)  # teleport.timestamp, converted to UTC


def test_unknown_fields_are_ignored() -> None:
    payload = load("event_bounce_permanent.json")
    payload["somethingNew"] = {"x": [1, 2]}
    payload["bounce"]["fancyField"] = True
    payload["bounce"]["bouncedRecipients"][0]["extra"] = "y"
    payload["mail"]["tags"]["weird"] = "not-a-list"
    [e] = parse_ses(payload)
    assert e.recipient == "nobody.here@example.net"
    assert e.tags["weird"] == ["not-a-list"]


def test_display_name_recipients_are_reduced_to_the_address() -> None:
    payload = load("event_send.json")
    payload["mail"]["destination"] = ["Jane Doe <Jane@Example.COM>"]
    [e] = parse_ses(payload)
    assert e.recipient == "jane@example.com"


# --------------------------------------------------------------------------- dedupe keys


def test_dedupe_key_ignores_sns_and_sqs_ids() -> None:
    payload = load("event_bounce_permanent.json")
    first = parse_body(sqs_record(sns(payload, message_id="a")))
    second = parse_body(sqs_record(sns(payload, message_id="b")))
    assert first.sns_message_id != second.sns_message_id
    assert [e.dedupe_key for e in first.events] == [e.dedupe_key for e in second.events]


def test_dedupe_key_matches_across_the_two_dialects() -> None:
    """The same SES bounce may arrive as an identity notification and as a
    configuration-set event; it must be applied once."""
    published = load("event_bounce_permanent.json")
    notified = copy.deepcopy(published)
    notified["notificationType"] = notified.pop("eventType")
    del notified["mail"]["tags"]
    assert parse_ses(published)[0].dedupe_key == parse_ses(notified)[0].dedupe_key


def test_dedupe_key_distinguishes_events() -> None:
    base = load("event_bounce_permanent.json")
    other_feedback = copy.deepcopy(base)
    other_feedback["bounce"]["feedbackId"] = "different"
    as_complaint = {
        "eventType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "Nobody.Here@Example.NET"}],
            "timestamp": base["bounce"]["timestamp"],
            "feedbackId": base["bounce"]["feedbackId"],
        },
        "mail": base["mail"],
    }
    later_open = load("event_open.json")
    later_open["open"]["timestamp"] = "2024-03-06T10:00:00.000Z"
    keys = [
        parse_ses(base)[0].dedupe_key,
        parse_ses(other_feedback)[0].dedupe_key,
        parse_ses(as_complaint)[0].dedupe_key,
        parse_ses(load("event_open.json"))[0].dedupe_key,
        parse_ses(later_open)[0].dedupe_key,
    ]
    assert len(set(keys)) == len(keys)


def test_timestamps_are_aware_utc() -> None:
    payload = load("event_delivery.json")
    payload["delivery"]["timestamp"] = "2024-03-05T12:41:04+02:00"
    [e] = parse_ses(payload)
    assert e.timestamp == datetime(2024, 3, 5, 10, 41, 4, tzinfo=UTC)
    assert e.timestamp.tzinfo is UTC
    payload["delivery"]["timestamp"] = "garbage"
    [e] = parse_ses(payload)
    assert e.timestamp == datetime(2024, 3, 5, 10, 40, 52, 240000, tzinfo=UTC)  # falls back to mail.timestamp


# --------------------------------------------------------------------------- bad bodies


def _without(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(payload: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


BOUNCE = load("event_bounce_permanent.json")
BOUNCE_TEXT = json.dumps(BOUNCE)
ENVELOPE = sns(BOUNCE)

BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not json", "this is not json", "body is not valid JSON"),
    ("empty", "   ", "body is empty"),
    ("not utf-8", b"\xff\xfe{", "not UTF-8"),
    ("not text", 42, "str or bytes"),
    ("array", "[1, 2]", "JSON array"),
    ("string", '"hello"', "JSON string"),
    ("wrong object", '{"foo": 1}', "neither an SNS envelope"),
    ("truncated envelope", ENVELOPE[: len(ENVELOPE) // 2], "body is not valid JSON"),
    ("truncated raw", BOUNCE_TEXT[:-40], "body is not valid JSON"),
    ("message not json", sns("hello there"), "SNS Message is not JSON"),
    ("message truncated", sns(BOUNCE_TEXT[:-40]), "SNS Message is not valid JSON"),
    ("message not ses", sns({"hello": "world"}), "not an SES event"),
    ("message array", sns("[1]"), "SNS Message is not JSON"),
    ("envelope without message", json.dumps({"Type": "Notification", "TopicArn": TOPIC}), "no Message"),
    ("unknown sns type", json.dumps({"Type": "Bogus", "MessageId": "x", "Message": "{}"}), "unknown SNS"),
    ("sqs body not string", json.dumps({"Body": {"a": 1}}), "expected a string"),
    ("sqs body not json", sqs_record("nope"), "SQS record Body is not valid JSON"),
    ("sqs in sqs", sqs_record(sqs_record(BOUNCE_TEXT)), "neither an SNS envelope"),
    ("type not string", json.dumps(_with(BOUNCE, 7, "eventType")), "no eventType or notificationType"),
    ("no mail", json.dumps(_without(BOUNCE, "mail")), "no mail object"),
    ("no message id", json.dumps(_without(BOUNCE, "mail", "messageId")), "mail.messageId"),
    ("blank message id", json.dumps(_with(BOUNCE, " ", "mail", "messageId")), "mail.messageId"),
    (
        "no bounced recipients",
        json.dumps(_without(BOUNCE, "bounce", "bouncedRecipients")),
        "bouncedRecipients",
    ),
    (
        "empty bounced recipients",
        json.dumps(_with(BOUNCE, [], "bounce", "bouncedRecipients")),
        "bouncedRecipients",
    ),
    (
        "recipient not object",
        json.dumps(_with(BOUNCE, ["a@b.c"], "bounce", "bouncedRecipients")),
        "not an object",
    ),
    (
        "recipient no address",
        json.dumps(_with(BOUNCE, [{"status": "5.1.1"}], "bounce", "bouncedRecipients")),
        "has no emailAddress",
    ),
    ("no bounce type", json.dumps(_without(BOUNCE, "bounce", "bounceType")), "bounceType"),
    ("bounce not object", json.dumps(_with(BOUNCE, [1], "bounce")), "bounce is a JSON array"),
    (
        "complaint without recipients",
        json.dumps(_without(load("event_complaint.json"), "complaint", "complainedRecipients")),
        "complainedRecipients",
    ),
    (
        "delivery without recipients",
        json.dumps(_without(load("event_delivery.json"), "delivery", "recipients")),
        "delivery.recipients",
    ),
    (
        "delay without recipients",
        json.dumps(_without(load("event_delivery_delay.json"), "deliveryDelay", "delayedRecipients")),
        "delayedRecipients",
    ),
    (
        "send without destination",
        json.dumps(_without(load("event_send.json"), "mail", "destination")),
        "mail.destination",
    ),
    (
        "send with bad destination",
        json.dumps(_with(load("event_send.json"), [None], "mail", "destination")),
        "not an address",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"), [(b, m) for _, b, m in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES]
)
def test_bad_bodies_raise_parse_error_saying_what_was_wrong(body: Any, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_body(body)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_an_address_listed_twice_gives_one_event() -> None:
    payload = load("event_send.json")
    payload["mail"]["destination"] = ["a@example.com", "A@Example.com", "b@example.com"]
    assert [e.recipient for e in parse_ses(payload)] == ["a@example.com", "b@example.com"]


def test_events_are_hashable_and_immutable() -> None:
    [e] = parse_ses(load("event_bounce_permanent.json"))
    assert e in {e}
    with pytest.raises(AttributeError):
        e.recipient = "other@example.com"  # type: ignore[misc]


# --------------------------------------------------------------------------- events without timestamps

MINIMAL_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "mail": {"messageId": "minimal-0001"},
    "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "gone@example.org"}]},
}
MINIMAL_DELIVERY: dict[str, Any] = {
    "eventType": "Delivery",
    "mail": {"messageId": "minimal-0002", "destination": ["a@example.org"]},
    "delivery": {"recipients": ["a@example.org"]},
}
RECEIVED = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
SNS_TIME = datetime(2024, 3, 5, 10, 41, 3, tzinfo=UTC)  # the Timestamp of sns()


def _sns_at(payload: dict[str, Any], timestamp: Any) -> str:
    envelope = json.loads(sns(payload))
    if timestamp is None:
        del envelope["Timestamp"]
    else:
        envelope["Timestamp"] = timestamp
    return json.dumps(envelope)


NO_TIMESTAMP_CASES = [
    ("raw bounce: time received", json.dumps(MINIMAL_BOUNCE), RECEIVED),
    ("bounce in SNS: envelope Timestamp", sns(MINIMAL_BOUNCE), SNS_TIME),
    ("bounce in SQS record in SNS: envelope Timestamp", sqs_record(sns(MINIMAL_BOUNCE)), SNS_TIME),
    ("raw bounce in SQS record: time received", sqs_record(json.dumps(MINIMAL_BOUNCE)), RECEIVED),
    ("SNS Timestamp garbage: time received", _sns_at(MINIMAL_BOUNCE, "yesterday"), RECEIVED),
    ("SNS Timestamp not a string: time received", _sns_at(MINIMAL_BOUNCE, 17), RECEIVED),
    ("SNS without Timestamp: time received", _sns_at(MINIMAL_BOUNCE, None), RECEIVED),
    ("SNS Timestamp with offset: in UTC", _sns_at(MINIMAL_BOUNCE, "2024-03-05T12:41:03+02:00"), SNS_TIME),
    ("raw delivery: time received", json.dumps(MINIMAL_DELIVERY), RECEIVED),
    ("delivery in SNS: envelope Timestamp", sns(MINIMAL_DELIVERY), SNS_TIME),
    (
        "mail.timestamp only: beats the envelope",
        sns(_with(MINIMAL_BOUNCE, "2024-03-05T09:00:00Z", "mail", "timestamp")),
        datetime(2024, 3, 5, 9, 0, tzinfo=UTC),
    ),
    (
        "bounce.timestamp: beats everything",
        sns(
            _with(
                _with(MINIMAL_BOUNCE, "2024-03-05T09:00:00Z", "mail", "timestamp"),
                "2024-03-05T09:30:00Z", "bounce", "timestamp",
            )
        ),
        datetime(2024, 3, 5, 9, 30, tzinfo=UTC),
    ),
    (
        "blank own timestamps: envelope Timestamp",
        sns(_with(_with(MINIMAL_BOUNCE, " ", "mail", "timestamp"), "", "bounce", "timestamp")),
        SNS_TIME,
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b, t) for _, b, t in NO_TIMESTAMP_CASES],
    ids=[i for i, _, _ in NO_TIMESTAMP_CASES],
)
def test_an_event_without_its_own_timestamp_takes_the_envelopes_else_the_time_received(
    body: str, expected: datetime
) -> None:
    [event] = parse_body(body, received=RECEIVED).events
    assert event.timestamp == expected
    assert event.timestamp.tzinfo is UTC
    assert event.recipient in ("gone@example.org", "a@example.org")


def test_a_minimal_bounce_keeps_what_the_policy_needs() -> None:
    [event] = parse_body(json.dumps(MINIMAL_BOUNCE), received=RECEIVED).events
    assert (event.kind, event.bounce_type, event.bounce_subtype) == (EventKind.BOUNCE, "Permanent", None)
    assert (event.recipient, event.ses_message_id) == ("gone@example.org", "minimal-0001")


def test_without_a_receipt_time_an_undated_event_is_dated_now() -> None:
    before = datetime.now(UTC)
    [event] = parse_ses(MINIMAL_BOUNCE)
    assert before <= event.timestamp <= datetime.now(UTC)


def test_undated_events_dedupe_on_content_not_on_when_they_arrived() -> None:
    """A redelivered undated event must map to the same key although it arrives later."""
    body = json.dumps(MINIMAL_BOUNCE)
    [first] = parse_body(body, received=RECEIVED).events
    [again] = parse_body(body, received=datetime(2025, 6, 2, tzinfo=UTC)).events
    [wrapped] = parse_body(sns(MINIMAL_BOUNCE)).events  # SNS's Timestamp: another time, same event
    assert first.dedupe_key == again.dedupe_key == wrapped.dedupe_key
    other = _with(MINIMAL_BOUNCE, "Transient", "bounce", "bounceType")
    [different] = parse_body(json.dumps(other), received=RECEIVED).events
    assert different.dedupe_key != first.dedupe_key


def test_dated_events_keep_their_dedupe_keys() -> None:
    """Keys of events with an SES timestamp do not depend on where the time came from."""
    payload = load("event_delivery.json")
    [raw] = parse_ses(payload)
    [late] = parse_body(sns(payload), received=RECEIVED).events
    assert raw.dedupe_key == late.dedupe_key
