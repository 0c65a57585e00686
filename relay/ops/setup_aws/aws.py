"""The boto3 side of setup-aws: read what exists, then perform a plan's steps in order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from relay.ops.setup_aws.resources import (
    Account,
    ClassNames,
    Destination,
    Existing,
    Queue,
    SesApiVersion,
    Subscription,
    canonical_type,
)
from relay.ops.setup_aws.steps import Step

MAX_PAGES = 1000  # bound on every listing loop


class SetupError(RuntimeError):
    """AWS refused a call, or answered something setup-aws cannot work with."""


@dataclass
class Clients:
    ses: Any
    sns: Any
    sqs: Any
    sts: Any
    api: SesApiVersion

    @classmethod
    def create(cls, *, region: str, endpoint_url: str | None, api: SesApiVersion) -> Clients:
        """`endpoint_url` (`[ses] endpoint_url`) is for the SES client only; SNS, SQS and
        STS endpoints are botocore's to resolve (AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL)."""
        import boto3
        from botocore.config import Config as BotoConfig

        session = boto3.session.Session()
        conf = BotoConfig(
            retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=30
        )

        def make(service: str, endpoint: str | None = None) -> Any:
            return session.client(service, region_name=region, endpoint_url=endpoint, config=conf)

        ses = make("sesv2" if api == "v2" else "ses", endpoint_url or None)
        return cls(ses, make("sns"), make("sqs"), make("sts"), api)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        message = (exc.response.get("Error", {}).get("Message") or "").strip().splitlines()[:1]
        raise SetupError(
            f"{what}: {_error_code(exc) or 'error'}{': ' + message[0] if message else ''}"
        ) from exc
    except BotoCoreError as exc:
        raise SetupError(f"{what}: {exc}") from exc


def account_of(clients: Clients, region: str) -> Account:
    ident = _call("sts GetCallerIdentity", clients.sts.get_caller_identity)
    partition = str(ident.get("Arn", "arn:aws:")).split(":")[1] or "aws"
    return Account(region=region, account_id=str(ident["Account"]), partition=partition)


_MISSING = {
    "ConfigurationSetDoesNotExist",
    "NotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
}


def _missing(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any | None:
    """The call's answer, or None when AWS says the resource does not exist."""
    from botocore.exceptions import ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        if _error_code(exc) in _MISSING:
            return None
        raise SetupError(f"{what}: {_error_code(exc)}") from exc


def discover(clients: Clients, names: Iterable[ClassNames]) -> Existing:
    """Read (never change) the state of every resource setup-aws manages."""
    names = list(names)
    found = Existing()
    wanted_topics = {c.topic for c in names}
    token = ""
    for _ in range(MAX_PAGES):
        reply = _call("sns ListTopics", clients.sns.list_topics, **({"NextToken": token} if token else {}))
        for topic in reply.get("Topics", []):
            arn = topic["TopicArn"]
            name = arn.rsplit(":", 1)[-1]
            if name in wanted_topics:
                found.topics[name] = arn
        token = reply.get("NextToken") or ""
        if not token:
            break
    for arn in found.topics.values():
        found.subscriptions[arn] = _subscriptions(clients, arn)
    for c in names:
        for queue in (c.dead_letter_queue, c.queue):
            reply = _missing(f"sqs GetQueueUrl {queue}", clients.sqs.get_queue_url, QueueName=queue)
            if reply is None:
                continue
            url = reply["QueueUrl"]
            attrs = _call(
                f"sqs GetQueueAttributes {queue}",
                clients.sqs.get_queue_attributes,
                QueueUrl=url,
                AttributeNames=["All"],
            ).get("Attributes", {})
            found.queues[queue] = Queue(url, attrs)
        destinations = _destinations(clients, c.configuration_set)
        if destinations is not None:
            found.configuration_sets[c.configuration_set] = destinations
    return found


def _subscriptions(clients: Clients, topic_arn: str) -> list[Subscription]:
    subs: list[Subscription] = []
    token = ""
    for _ in range(MAX_PAGES):
        kwargs: dict[str, Any] = {"TopicArn": topic_arn, **({"NextToken": token} if token else {})}
        reply = _call("sns ListSubscriptionsByTopic", clients.sns.list_subscriptions_by_topic, **kwargs)
        for s in reply.get("Subscriptions", []):
            if s.get("Protocol") != "sqs" or not str(s.get("SubscriptionArn", "")).startswith("arn:"):
                continue  # pending confirmations have no ARN yet
            attrs = _call(
                "sns GetSubscriptionAttributes",
                clients.sns.get_subscription_attributes,
                SubscriptionArn=s["SubscriptionArn"],
            ).get("Attributes", {})
            raw = str(attrs.get("RawMessageDelivery", "false")).lower() == "true"
            subs.append(Subscription(s["SubscriptionArn"], s.get("Endpoint", ""), raw))
        token = reply.get("NextToken") or ""
        if not token:
            break
    return subs


def _destinations(clients: Clients, cset: str) -> list[Destination] | None:
    """The set's event destinations; None when the configuration set does not exist."""
    if clients.api == "v2":
        if (
            _missing(
                f"sesv2 GetConfigurationSet {cset}",
                clients.ses.get_configuration_set,
                ConfigurationSetName=cset,
            )
            is None
        ):
            return None
        reply = _call(
            f"sesv2 GetConfigurationSetEventDestinations {cset}",
            clients.ses.get_configuration_set_event_destinations,
            ConfigurationSetName=cset,
        )
        return _read_destinations(reply.get("EventDestinations", []), "SnsDestination", "TopicArn")
    reply = _missing(
        f"ses DescribeConfigurationSet {cset}",
        clients.ses.describe_configuration_set,
        ConfigurationSetName=cset,
        ConfigurationSetAttributeNames=["eventDestinations"],
    )
    if reply is None:
        return None
    return _read_destinations(reply.get("EventDestinations", []), "SNSDestination", "TopicARN")


def _read_destinations(items: list[Any], sns_key: str, arn_key: str) -> list[Destination]:
    """Event destinations as setup-aws compares them; SESv1 and SESv2 answer the same
    fields but spell the SNS part differently (`sns_key`, `arn_key`)."""
    return [
        Destination(
            d["Name"],
            bool(d.get("Enabled")),
            frozenset(canonical_type(t) for t in d.get("MatchingEventTypes", [])),
            (d.get(sns_key) or {}).get(arn_key),
        )
        for d in items
        if d  # moto answers [None] for a set without any
    ]


@dataclass
class Outcome:
    created_queues: dict[str, str] = field(default_factory=dict)  # queue name -> URL
    lines: list[str] = field(default_factory=list)


def execute(
    steps: Iterable[Step],
    clients: Clients,
    existing: Existing,
    report: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Perform the create/update steps in order; report each step as it completes.

    A failure stops the run (SetupError, naming the step); what was done before it
    stays, and running again picks up from there.
    """
    outcome = Outcome()
    services = {"ses": clients.ses, "sns": clients.sns, "sqs": clients.sqs}
    urls = {name: q.url for name, q in existing.queues.items()}
    for step in steps:
        if step.action in ("exists", "differs"):
            line = step.line()
        else:
            service, method = step.call.split(".", 1)
            params = dict(step.params)
            if step.queue:
                params["QueueUrl"] = urls[step.queue]
            reply = _call(f"{step.kind} {step.name}", getattr(services[service], method), **params)
            if step.call == "sqs.create_queue":
                urls[step.name] = outcome.created_queues[step.name] = reply["QueueUrl"]
            line = step.line("created" if step.action == "create" else "updated")
        outcome.lines.append(line)
        report(line)
    return outcome
