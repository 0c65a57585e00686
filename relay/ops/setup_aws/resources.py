"""The AWS resources setup-aws manages: their names per class, and what exists of them (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from relay.config import Config

SesApiVersion = Literal["v1", "v2"]

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
V1_NAMES = {
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

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_LIMITS = {"queue": 80, "topic": 256, "configuration_set": 64, "event_destination": 64}


def wanted_types(api: SesApiVersion) -> tuple[str, ...]:
    return EVENT_TYPES if api == "v2" else V1_EVENT_TYPES


def canonical_type(name: str) -> str:
    """An event type in SESv2's spelling, whichever API reported it."""
    for v2, v1 in V1_NAMES.items():
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
