"""`ses-relay setup-aws`: the AWS side of the feedback path, per class, idempotently.

For every class: its SES configuration set with an event destination publishing
all ten event types to an SNS topic; the topic; an SQS queue subscribed to it
(SNS envelopes, not raw delivery: the consumer reads both, and the envelope keeps
the topic ARN for auditing) with a dead-letter queue after 4 receives and 14 days'
retention on both; and the queue policy letting only that topic send to it.

The work is split so that the decisions can be tested without AWS:
- `class_names` derives every resource name from the prefix and the class (pure,
  resources.py, with the records of what exists);
- `discover` reads what exists (boto3, read-only: aws.py);
- `plan` compares the two and returns a list of `Step`s: pure data holding the
  exact API arguments of each creation, so `--dry-run` shows precisely what a
  real run would call (steps.py);
- `execute` performs the steps in order (aws.py).
It never deletes or replaces anything: a resource that exists but differs from
what setup-aws would make is reported ("differs") and left alone, and a queue
policy that exists gets our statement added beside its own.

SES API: v2 by default, because SESv1's event destinations cannot subscribe the
DELIVERY_DELAY and SUBSCRIPTION events. `--ses-api v1` uses SESv1 (same
configuration sets; eight event types), which is what moto 5.2 implements; its
SESv2 has configuration sets but no event destinations.
"""

from relay.ops.setup_aws.aws import Clients, Outcome, SetupError, account_of, discover, execute
from relay.ops.setup_aws.resources import (
    EVENT_TYPES,
    V1_EVENT_TYPES,
    Account,
    ClassNames,
    Destination,
    Existing,
    Queue,
    SesApiVersion,
    Subscription,
    canonical_type,
    class_names,
    wanted_types,
)
from relay.ops.setup_aws.steps import (
    MAX_RECEIVES,
    RETENTION_SECONDS,
    Step,
    plan,
    policy_statement,
    queue_urls,
    redrive_policy,
    updated_config,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_RECEIVES",
    "RETENTION_SECONDS",
    "V1_EVENT_TYPES",
    "Account",
    "ClassNames",
    "Clients",
    "Destination",
    "Existing",
    "Outcome",
    "Queue",
    "SesApiVersion",
    "SetupError",
    "Step",
    "Subscription",
    "account_of",
    "canonical_type",
    "class_names",
    "discover",
    "execute",
    "plan",
    "policy_statement",
    "queue_urls",
    "redrive_policy",
    "updated_config",
    "wanted_types",
]
