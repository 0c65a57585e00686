"""The plan: what setup-aws will do to each resource, as pure data (`Step`s) with the exact calls."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from relay.ops.setup_aws.resources import (
    V1_NAMES,
    Account,
    ClassNames,
    Existing,
    SesApiVersion,
    wanted_types,
)

Action = Literal["create", "update", "exists", "differs"]

RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to fix a stopped consumer
MAX_RECEIVES = 4  # then the message goes to the dead-letter queue


@dataclass(frozen=True)
class Step:
    """One resource: what will happen to it, and the call that does it (pure data)."""

    klass: str
    kind: str
    name: str
    action: Action
    detail: str = ""
    call: str = ""  # "<service>.<boto3 method>", empty when nothing is to be done
    params: Mapping[str, Any] = field(default_factory=dict)
    queue: str = ""  # for SQS attribute steps: the queue (by name) whose URL the call needs

    def line(self, outcome: str | None = None) -> str:
        state = outcome or {"create": "will create", "update": "will update"}.get(self.action, self.action)
        tail = f"  ({self.detail})" if self.detail else ""
        return f"{state:<11} {self.kind:<22} {self.name}{tail}"


def redrive_policy(dlq_arn: str) -> str:
    return json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)})


def policy_statement(queue_arn: str, topic_arn: str, sid: str) -> dict[str, Any]:
    """Only this topic may send to this queue (SNS signs as the service, so the topic is the condition)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }


def _allows_topic(policy: Mapping[str, Any], topic_arn: str) -> bool:
    statements = policy.get("Statement", [])
    for st in statements if isinstance(statements, list) else [statements]:
        if not isinstance(st, Mapping) or st.get("Effect") != "Allow":
            continue
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("sqs:SendMessage", "sqs:*", "*") for a in actions):
            continue
        for test in ("ArnEquals", "ArnLike", "StringEquals"):
            source = st.get("Condition", {}).get(test, {}).get("aws:SourceArn")
            if source == topic_arn or (isinstance(source, list) and topic_arn in source):
                return True
    return False


def _queue_steps(c: ClassNames, existing: Existing, account: Account) -> list[Step]:
    steps: list[Step] = []
    dlq_arn = account.arn("sqs", c.dead_letter_queue)
    retention = {"MessageRetentionPeriod": str(RETENTION_SECONDS)}
    for name, what in ((c.dead_letter_queue, "sqs dead-letter queue"), (c.queue, "sqs queue")):
        state = existing.queues.get(name)
        if state is None:
            steps.append(
                Step(
                    c.klass,
                    what,
                    name,
                    "create",
                    "14-day retention",
                    "sqs.create_queue",
                    {"QueueName": name, "Attributes": retention},
                )
            )
        elif state.attributes.get("MessageRetentionPeriod") != str(RETENTION_SECONDS):
            days = int(state.attributes.get("MessageRetentionPeriod", "345600")) / 86400
            steps.append(Step(c.klass, what, name, "differs", f"retention {days:g} days, not 14; left alone"))
        else:
            steps.append(Step(c.klass, what, name, "exists"))

    queue = existing.queues.get(c.queue)
    redrive = (
        json.loads(queue.attributes["RedrivePolicy"])
        if queue and "RedrivePolicy" in queue.attributes
        else None
    )
    label = f"{c.queue} -> {c.dead_letter_queue}"
    if redrive is None:
        steps.append(
            Step(
                c.klass,
                "sqs redrive policy",
                label,
                "create",
                f"after {MAX_RECEIVES} receives",
                "sqs.set_queue_attributes",
                {"Attributes": {"RedrivePolicy": redrive_policy(dlq_arn)}},
                queue=c.queue,
            )
        )
    elif redrive.get("deadLetterTargetArn") == dlq_arn and str(redrive.get("maxReceiveCount")) == str(
        MAX_RECEIVES
    ):
        steps.append(Step(c.klass, "sqs redrive policy", label, "exists"))
    else:
        steps.append(
            Step(
                c.klass,
                "sqs redrive policy",
                label,
                "differs",
                f"{redrive.get('maxReceiveCount')} receives to {redrive.get('deadLetterTargetArn')}; "
                "left alone",
            )
        )
    return steps


def _policy_step(c: ClassNames, existing: Existing, account: Account, prefix: str) -> Step:
    queue_arn, topic_arn = account.arn("sqs", c.queue), account.arn("sns", c.topic)
    queue = existing.queues.get(c.queue)
    current: dict[str, Any] = (
        json.loads(queue.attributes["Policy"]) if queue and queue.attributes.get("Policy") else {}
    )
    label = f"{c.queue} <- {c.topic}"
    if current and _allows_topic(current, topic_arn):
        return Step(c.klass, "sqs queue policy", label, "exists")
    ours = policy_statement(queue_arn, topic_arn, sid=f"{prefix}-{c.klass}-sns")
    if current:
        statements = current.get("Statement", [])
        statements = statements if isinstance(statements, list) else [statements]
        policy = {**current, "Statement": [*statements, ours]}
        action: Action = "update"
        detail = "adds a statement; keeps the existing ones"
    else:
        policy = {"Version": "2012-10-17", "Statement": [ours]}
        action, detail = "create", "only the topic may send"
    return Step(
        c.klass,
        "sqs queue policy",
        label,
        action,
        detail,
        "sqs.set_queue_attributes",
        {"Attributes": {"Policy": json.dumps(policy)}},
        queue=c.queue,
    )


def _ses_steps(c: ClassNames, existing: Existing, account: Account, api: SesApiVersion) -> list[Step]:
    steps: list[Step] = []
    topic_arn = account.arn("sns", c.topic)
    if c.configuration_set in existing.configuration_sets:
        steps.append(Step(c.klass, "ses configuration set", c.configuration_set, "exists"))
        destinations = existing.configuration_sets[c.configuration_set]
    else:
        params: dict[str, Any] = (
            {"ConfigurationSetName": c.configuration_set}
            if api == "v2"
            else {"ConfigurationSet": {"Name": c.configuration_set}}
        )
        steps.append(
            Step(
                c.klass,
                "ses configuration set",
                c.configuration_set,
                "create",
                "",
                "ses.create_configuration_set",
                params,
            )
        )
        destinations = []
    label = f"{c.configuration_set}/{c.event_destination} -> {c.topic}"
    want = frozenset(wanted_types(api))
    mine = [d for d in destinations if d.topic_arn == topic_arn]
    if mine:
        d = mine[0]
        missing = sorted(want - d.types)
        if not d.enabled or missing:
            why = "disabled" if not d.enabled else "lacks " + ", ".join(missing)
            steps.append(
                Step(
                    c.klass,
                    "ses event destination",
                    f"{c.configuration_set}/{d.name} -> {c.topic}",
                    "differs",
                    f"{why}; left alone",
                )
            )
        else:
            steps.append(
                Step(
                    c.klass, "ses event destination", f"{c.configuration_set}/{d.name} -> {c.topic}", "exists"
                )
            )
        return steps
    clash = [d for d in destinations if d.name == c.event_destination]
    if clash:
        steps.append(
            Step(
                c.klass,
                "ses event destination",
                label,
                "differs",
                f"the name is taken by one sending to {clash[0].topic_arn or 'elsewhere'}; left alone",
            )
        )
        return steps
    types = wanted_types(api)
    if api == "v2":
        call = "ses.create_configuration_set_event_destination"
        params = {
            "ConfigurationSetName": c.configuration_set,
            "EventDestinationName": c.event_destination,
            "EventDestination": {
                "Enabled": True,
                "MatchingEventTypes": list(types),
                "SnsDestination": {"TopicArn": topic_arn},
            },
        }
        detail = "all 10 event types"
    else:
        call = "ses.create_configuration_set_event_destination"
        params = {
            "ConfigurationSetName": c.configuration_set,
            "EventDestination": {
                "Name": c.event_destination,
                "Enabled": True,
                "MatchingEventTypes": [V1_NAMES[t] for t in types],
                "SNSDestination": {"TopicARN": topic_arn},
            },
        }
        detail = "8 event types: SESv1 cannot publish DELIVERY_DELAY or SUBSCRIPTION (use --ses-api v2)"
    steps.append(Step(c.klass, "ses event destination", label, "create", detail, call, params))
    return steps


def plan(
    names: Iterable[ClassNames], existing: Existing, account: Account, *, api: SesApiVersion, prefix: str
) -> list[Step]:
    """Every step, in an order where each creation finds what it refers to already made."""
    steps: list[Step] = []
    for c in names:
        topic_arn, queue_arn = account.arn("sns", c.topic), account.arn("sqs", c.queue)
        steps += _queue_steps(c, existing, account)
        if c.topic in existing.topics:
            steps.append(Step(c.klass, "sns topic", c.topic, "exists"))
        else:
            steps.append(
                Step(c.klass, "sns topic", c.topic, "create", "", "sns.create_topic", {"Name": c.topic})
            )
        steps.append(_policy_step(c, existing, account, prefix))
        subs = [s for s in existing.subscriptions.get(topic_arn, []) if s.endpoint == queue_arn]
        label = f"{c.topic} -> {c.queue}"
        if not subs:
            steps.append(
                Step(
                    c.klass,
                    "sns subscription",
                    label,
                    "create",
                    "SNS envelopes; raw delivery off",
                    "sns.subscribe",
                    {
                        "TopicArn": topic_arn,
                        "Protocol": "sqs",
                        "Endpoint": queue_arn,
                        "Attributes": {"RawMessageDelivery": "false"},
                        "ReturnSubscriptionArn": True,
                    },
                )
            )
        elif subs[0].raw:
            steps.append(
                Step(
                    c.klass,
                    "sns subscription",
                    label,
                    "differs",
                    "raw delivery is on (the consumer reads it too); left alone",
                )
            )
        else:
            steps.append(Step(c.klass, "sns subscription", label, "exists"))
        steps += _ses_steps(c, existing, account, api)
    return steps


def queue_urls(names: Iterable[ClassNames], existing: Existing, created: Mapping[str, str]) -> dict[str, str]:
    """Class -> queue URL, for the config: from this run's creations, else what existed."""
    out: dict[str, str] = {}
    for c in names:
        url = created.get(c.queue) or (existing.queues[c.queue].url if c.queue in existing.queues else None)
        if url:
            out[c.klass] = url
    return out


def updated_config(
    data: Mapping[str, Any], names: Iterable[ClassNames], urls: Mapping[str, str], region: str
) -> dict[str, Any]:
    """The operator's settings with the classes' configuration sets, the region and the queue URLs.

    Queue URLs already configured are kept (other deployments' queues, a separate
    bounce queue); ours are added after them.
    """
    out = json.loads(json.dumps(data))  # a deep copy of plain data
    classes = out.setdefault("classes", {})
    for c in names:
        classes.setdefault(c.klass, {})["configuration_set"] = c.configuration_set
    out.setdefault("ses", {})["region"] = region
    feedback = out.setdefault("feedback", {})
    feedback["queue_urls"] = list(dict.fromkeys([*feedback.get("queue_urls", []), *urls.values()]))
    return out
