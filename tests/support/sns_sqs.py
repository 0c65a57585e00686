"""SNS -> SQS feedback plumbing on moto's server, and realistic SES event JSON to put through it.

moto's own SES does not publish usable events (it keeps what was sent, nothing more), so
the tests build the SES JSON themselves, in the shape SES really sends: event
publishing (`eventType`, with `mail.tags` echoing the tags our sender attached) or
identity notifications (`notificationType`, no tags). Timestamps default to now,
because `events list` only shows the last 24 h.

`FeedbackQueues` is one SNS topic with two SQS subscribers, as deployments have it:
one receiving SNS envelopes, one with raw message delivery (the body is the SES JSON
itself). Every name carries a random suffix, since the moto server is shared by the
whole test session.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3

from relay.timeutil import utcnow

REGION = "us-east-1"


@dataclass
class FeedbackQueues:
    """An SNS topic, an envelope queue and a raw-delivery queue subscribed to it."""

    endpoint: str
    topic_arn: str
    envelope_url: str
    raw_url: str
    sns: Any
    sqs: Any

    @property
    def urls(self) -> tuple[str, str]:
        return self.envelope_url, self.raw_url

    def publish(self, payload: dict[str, Any]) -> str:
        """Publish one SES event to the topic, as SES does: the JSON as the SNS Message string."""
        return self.sns.publish(TopicArn=self.topic_arn, Message=json.dumps(payload))["MessageId"]

    def send_body(self, queue_url: str, body: str) -> None:
        """Put a body straight into a queue (what a misbehaving publisher or a truncation would)."""
        self.sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    def peek(self, queue_url: str) -> list[str]:
        """Bodies currently in the queue, left visible for the next receiver."""
        reply = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m["Body"] for m in reply.get("Messages", [])]

    def take(self, queue_url: str) -> list[str]:
        """Receive and delete everything (at most 10) in the queue."""
        reply = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        for m in messages:
            self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return [m["Body"] for m in messages]

    def depth(self, queue_url: str) -> int:
        """Messages in the queue whether visible, in flight or delayed."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
        return sum(int(attrs.get(n, 0)) for n in names)

    def empty(self, queue_url: str) -> bool:
        """Nothing counted and nothing to receive: both ways of asking, since either can lie alone."""
        if self.depth(queue_url):
            return False
        reply = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return not reply.get("Messages")


def feedback_queues(endpoint: str, prefix: str = "ses-feedback") -> FeedbackQueues:
    """Create the topic and both subscribed queues on the moto server at `endpoint`."""
    suffix = secrets.token_hex(4)
    sns = boto3.client("sns", endpoint_url=endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    topic_arn = sns.create_topic(Name=f"{prefix}-{suffix}")["TopicArn"]
    urls = []
    for name, raw in (("envelope", False), ("raw", True)):
        url = sqs.create_queue(QueueName=f"{prefix}-{name}-{suffix}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true"} if raw else {}
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        urls.append(url)
    return FeedbackQueues(endpoint, topic_arn, urls[0], urls[1], sns, sqs)


# --------------------------------------------------------------------------- SES event JSON


def iso(when: datetime) -> str:
    """SES's timestamp format: UTC, milliseconds, Z."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def feedback_id() -> str:
    return f"0100018e{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(2)}-000000"


def ses_mail(
    message_id: str,
    destination: list[str],
    *,
    submission_id: str | None = None,
    klass: str | None = None,
    source: str = "app@example.com",
    subject: str = "hello",
    sent_at: datetime | None = None,
    configuration_set: str | None = None,
    tags: bool = True,
) -> dict[str, Any]:
    """The `mail` object; with tags=False it is what an identity notification carries."""
    mail: dict[str, Any] = {
        "timestamp": iso(sent_at or utcnow()),
        "source": source,
        "sourceArn": f"arn:aws:ses:{REGION}:123456789012:identity/{source.rpartition('@')[2]}",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": f"App <{source}>"},
            {"name": "To", "value": ", ".join(destination)},
            {"name": "Subject", "value": subject},
        ],
        "commonHeaders": {"from": [f"App <{source}>"], "to": list(destination), "subject": subject},
    }
    if tags:
        tag_map: dict[str, list[str]] = {
            "ses:source-ip": ["192.0.2.10"],
            "ses:from-domain": [source.rpartition("@")[2]],
            "ses:caller-identity": ["ses-relay"],
        }
        if configuration_set:
            tag_map["ses:configuration-set"] = [configuration_set]
        if klass:
            tag_map["message-class"] = [klass]
        if submission_id:
            tag_map["submission-id"] = [submission_id]
        mail["tags"] = tag_map
    else:
        mail["sourceIp"] = "192.0.2.10"
    return mail


def _wrap(type_name: str, detail_key: str, detail: dict[str, Any], mail: dict[str, Any]) -> dict[str, Any]:
    """Event publishing when the mail has tags, identity notification when it has none."""
    key = "eventType" if "tags" in mail else "notificationType"
    return {key: type_name, detail_key: detail, "mail": mail}


_DIAGNOSTICS = {
    ("Permanent", "General"): ("5.1.1", "smtp; 550 5.1.1 <{addr}>: Recipient address rejected: User unknown"),
    ("Permanent", "NoEmail"): ("5.1.1", "smtp; 550 5.1.1 {addr}: no such mailbox here"),
    ("Permanent", "Suppressed"): ("5.1.1", "Amazon SES has suppressed sending to this address"),
    ("Transient", "General"): ("4.4.7", "smtp; 421 4.4.7 Message expired: unable to deliver in 840 minutes"),
    ("Transient", "MailboxFull"): ("5.2.2", "smtp; 552 5.2.2 {addr}: mailbox full"),
    ("Transient", "MessageTooLarge"): ("5.3.4", "smtp; 552 5.3.4 Message size exceeds fixed limit"),
    ("Undetermined", "Undetermined"): (None, None),
}


def bounce(
    mail: dict[str, Any],
    recipients: list[str],
    bounce_type: str = "Permanent",
    subtype: str = "General",
    *,
    at: datetime | None = None,
    fid: str | None = None,
    diagnostic: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    default_status, template = _DIAGNOSTICS.get((bounce_type, subtype), ("5.0.0", "smtp; 550 5.0.0 rejected"))
    bounced = []
    for addr in recipients:
        item: dict[str, Any] = {"emailAddress": addr}
        code = diagnostic or (template.format(addr=addr) if template else None)
        if code:
            item.update(action="failed", status=status or default_status, diagnosticCode=code)
        bounced.append(item)
    detail = {
        "bounceType": bounce_type,
        "bounceSubType": subtype,
        "bouncedRecipients": bounced,
        "timestamp": iso(at or utcnow()),
        "feedbackId": fid or feedback_id(),
        "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
        "remoteMtaIp": "198.51.100.25",
    }
    return _wrap("Bounce", "bounce", detail, mail)


def delivery(mail: dict[str, Any], recipients: list[str], *, at: datetime | None = None) -> dict[str, Any]:
    detail = {
        "timestamp": iso(at or utcnow()),
        "processingTimeMillis": 1840,
        "recipients": list(recipients),
        "smtpResponse": "250 2.0.0 OK 1709635264 a1si123456wmq.12 - gsmtp",
        "reportingMTA": "a8-30.smtp-out.amazonses.com",
        "remoteMtaIp": "198.51.100.25",
    }
    return _wrap("Delivery", "delivery", detail, mail)


def complaint(
    mail: dict[str, Any],
    recipients: list[str],
    *,
    at: datetime | None = None,
    fid: str | None = None,
    feedback_type: str = "abuse",
) -> dict[str, Any]:
    stamp = iso(at or utcnow())
    detail = {
        "complainedRecipients": [{"emailAddress": a} for a in recipients],
        "timestamp": stamp,
        "feedbackId": fid or feedback_id(),
        "userAgent": "Yahoo!-Mail-Feedback/2.0",
        "complaintFeedbackType": feedback_type,
        "arrivalDate": stamp,
    }
    return _wrap("Complaint", "complaint", detail, mail)


def per_message(type_name: str, mail: dict[str, Any], detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send, Reject, Rendering Failure, Open, Click, Subscription: event publishing only."""
    keys = {
        "Send": "send",
        "Reject": "reject",
        "Rendering Failure": "failure",
        "Open": "open",
        "Click": "click",
        "Subscription": "subscription",
    }
    return {"eventType": type_name, "mail": mail, keys.get(type_name, type_name.lower()): detail or {}}


def delivery_delay(
    mail: dict[str, Any], recipients: list[str], *, at: datetime | None = None
) -> dict[str, Any]:
    detail = {
        "timestamp": iso(at or utcnow()),
        "delayType": "MailboxFull",
        "expirationTime": iso(at or utcnow()),
        "delayedRecipients": [
            {"emailAddress": a, "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}
            for a in recipients
        ],
    }
    return {"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": detail}
