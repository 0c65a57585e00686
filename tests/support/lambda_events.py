"""What Lambda hands a function with an SQS trigger: the event (a batch of SQS records) and the
context, in the shapes the Lambda runtime gives them.

The record keys are SQS's event-source record as Lambda documents it; the body is what
SNS put on the queue (an SNS envelope, or the SES JSON itself with raw message delivery).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:ses-relay-transactional-events"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:ses-relay-transactional-events"


def envelope(message: str) -> str:
    """The SNS envelope an SNS -> SQS subscription (raw delivery off) puts around `message`."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": TOPIC_ARN,
            "Message": message,
            "Timestamp": "2024-03-05T10:41:03.112Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE" + "A" * 160,
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        }
    )


def sqs_record(body: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex * 4,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1709635263112",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1709635263120",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }


def sqs_event(bodies: Iterable[str]) -> dict[str, Any]:
    return {"Records": [sqs_record(body) for body in bodies]}


def message_ids(event: dict[str, Any]) -> list[str]:
    return [r["messageId"] for r in event["Records"]]


def failures(response: dict[str, Any]) -> list[str]:
    """The message ids a handler's answer hands back to SQS (and checks the answer's shape)."""
    assert set(response) == {"batchItemFailures"}, response
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


@dataclass
class LambdaContext:
    """The context object's parts the handler reads: the request id and the time left.

    `remaining_ms` gives the answers of get_remaining_time_in_millis in turn (the last
    one repeats), as the clock of an invocation would.
    """

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: list[int] = field(default_factory=lambda: [900_000])
    function_name: str = "ses-relay-feedback"
    memory_limit_in_mb: int = 256
    asked: int = 0

    def get_remaining_time_in_millis(self) -> int:
        answer = self.remaining_ms[min(self.asked, len(self.remaining_ms) - 1)]
        self.asked += 1
        return answer
