"""`ses-relay setup-aws`: the AWS side of the feedback path, per class, idempotently.

For every class: its SES configuration set with an event destination publishing
all ten event types to an SNS topic; the topic; an SQS queue subscribed to it
(SNS envelopes, not raw delivery: the consumer reads both, and the envelope keeps
the topic ARN for auditing) with a dead-letter queue after 4 receives and 14 days'
retention on both; and the queue policy letting only that topic send to it.

The work is split so that the decisions can be tested without AWS:
- `class_names` derives every resource name from the prefix and the class (pure);
- `discover` reads what exists (boto3, read-only);
- `plan` compares the two and returns a list of `Step`s: pure data holding the
  exact API arguments of each creation, so `--dry-run` shows precisely what a
  real run would call;
- `execute` performs the steps in order.
It never deletes or replaces anything: a resource that exists but differs from
what setup-aws would make is reported ("differs") and left alone, and a queue
policy that exists gets our statement added beside its own.

SES API: v2 by default, because SESv1's event destinations cannot subscribe the
DELIVERY_DELAY and SUBSCRIPTION events. `--ses-api v1` uses SESv1 (same
configuration sets; eight event types), which is what moto 5.2 implements; its
SESv2 has configuration sets but no event destinations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from relay.config import Config

SesApiVersion = Literal["v1", "v2"]
Action = Literal["create", "update", "exists", "differs"]

EVENT_TYPES = (
    "SEND",
    "DELIVERY",
    "BOUNCE",
    "COMPLAINT",
    "REJECT",
    "DELIVERY_DELAY",
    "RENDERING_FAILURE",
    "OPEN",
    "CLICK",
    "SUBSCRIPTION",
)
_V1_NAMES = {
    "SEND": "send",
    "DELIVERY": "delivery",
    "BOUNCE": "bounce",
    "COMPLAINT": "complaint",
    "REJECT": "reject",
    "RENDERING_FAILURE": "renderingFailure",
    "OPEN": "open",
    "CLICK": "click",
    "DELIVERY_DELAY": "deliveryDelay",
    "SUBSCRIPTION": "subscription",
}
V1_EVENT_TYPES = ("SEND", "DELIVERY", "BOUNCE", "COMPLAINT", "REJECT", "RENDERING_FAILURE", "OPEN", "CLICK")
RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to fix a stopped consumer
MAX_RECEIVES = 4  # then the message goes to the dead-letter queue
MAX_PAGES = 1000  # bound on every listing loop

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_LIMITS = {"queue": 80, "topic": 256, "configuration_set": 64, "event_destination": 64}


class SetupError(RuntimeError):
    """AWS refused a call, or answered something setup-aws cannot work with."""


def wanted_types(api: SesApiVersion) -> tuple[str, ...]:
    return EVENT_TYPES if api == "v2" else V1_EVENT_TYPES


def canonical_type(name: str) -> str:
    """An event type in SESv2's spelling, whichever API reported it."""
    for v2, v1 in _V1_NAMES.items():
        if name in (v2, v1):
            return v2
    return name.upper()


# -- names --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassNames:
    """The AWS resources of one class."""

    klass: str
    configuration_set: str
    event_destination: str
    topic: str
    queue: str
    dead_letter_queue: str


def class_names(config: Config, prefix: str) -> list[ClassNames]:
    """One set of resources per configuration set, named `<prefix>-<class>-...`.

    A class without a configuration set gets `<prefix>-<class>` (and the printed
    config says so). Classes sharing a configuration set share its resources: a
    second event destination on the same set would deliver every event twice.
    """
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"--prefix {prefix!r}: use 1-40 letters, digits, '-' or '_', starting with a letter or digit"
        )
    out: list[ClassNames] = []
    seen: set[str] = set()
    for klass in sorted(config.classes, key=lambda k: (k != config.default_class, k)):
        base = f"{prefix}-{klass}"
        cset = config.classes[klass].configuration_set or base
        if cset in seen:
            continue
        seen.add(cset)
        names = ClassNames(
            klass, cset, f"{base}-sns", f"{base}-events", f"{base}-events", f"{base}-events-dlq"
        )
        for kind, limit in _LIMITS.items():
            value = names.dead_letter_queue if kind == "queue" else getattr(names, kind)
            if len(value) > limit:
                raise ValueError(
                    f"{kind} name {value!r} is longer than AWS's {limit}; use a shorter --prefix"
                )
        out.append(names)
    return out


# -- what exists ----------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """Where ARNs point: they are predictable, so the plan can name them before they exist."""

    region: str
    account_id: str
    partition: str = "aws"

    def arn(self, service: str, name: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account_id}:{name}"


@dataclass(frozen=True)
class Destination:
    name: str
    enabled: bool
    types: frozenset[str]  # SESv2 spelling
    topic_arn: str | None


@dataclass(frozen=True)
class Queue:
    url: str
    attributes: Mapping[str, str]


@dataclass(frozen=True)
class Subscription:
    arn: str
    endpoint: str
    raw: bool


@dataclass
class Existing:
    configuration_sets: dict[str, list[Destination]] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)  # name -> ARN
    queues: dict[str, Queue] = field(default_factory=dict)  # name -> state
    subscriptions: dict[str, list[Subscription]] = field(default_factory=dict)  # topic ARN -> SQS subs


# -- the plan --------------------------------------------------------------------------


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
                "MatchingEventTypes": [_V1_NAMES[t] for t in types],
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


# -- AWS (boto3) -------------------------------------------------------------------------


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
        return [
            Destination(
                d["Name"],
                bool(d.get("Enabled")),
                frozenset(canonical_type(t) for t in d.get("MatchingEventTypes", [])),
                (d.get("SnsDestination") or {}).get("TopicArn"),
            )
            for d in reply.get("EventDestinations", [])
            if d
        ]
    reply = _missing(
        f"ses DescribeConfigurationSet {cset}",
        clients.ses.describe_configuration_set,
        ConfigurationSetName=cset,
        ConfigurationSetAttributeNames=["eventDestinations"],
    )
    if reply is None:
        return None
    return [
        Destination(
            d["Name"],
            bool(d.get("Enabled")),
            frozenset(canonical_type(t) for t in d.get("MatchingEventTypes", [])),
            (d.get("SNSDestination") or {}).get("TopicARN"),
        )
        for d in reply.get("EventDestinations", [])
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
