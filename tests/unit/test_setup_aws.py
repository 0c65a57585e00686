"""setup-aws's pure parts: resource names per class, the plan, event type names, the config it writes."""

from __future__ import annotations

import json
import tomllib

import pytest

from relay import config as configuration
from relay.config import Config
from relay.ops import setup_aws as sa
from relay.ops.config_toml import config_data, dumps

# -- the pure parts -----------------------------------------------------------------------


def test_class_names_share_a_configuration_set_and_check_lengths() -> None:
    config = configuration.from_dict(
        {
            "default_class": "list",
            "classes": {
                "transactional": {"configuration_set": "main"},
                "list": {"configuration_set": "main"},
                "bulk": {},
            },
        }
    )
    names = sa.class_names(config, "p")
    assert [(n.klass, n.configuration_set) for n in names] == [("list", "main"), ("bulk", "p-bulk")]
    assert names[0].dead_letter_queue == "p-list-events-dlq"
    with pytest.raises(ValueError, match="longer than AWS's 80"):
        sa.class_names(configuration.from_dict({"classes": {"transactional": {}, "x" * 40: {}}}), "p" * 40)
    with pytest.raises(ValueError, match="--prefix"):
        sa.class_names(Config(), "-starts-with-dash")


def test_plan_on_a_complete_setup_has_nothing_to_do() -> None:
    account = sa.Account("eu-west-1", "111122223333")
    [names] = sa.class_names(
        configuration.from_dict({"classes": {"tx": {"configuration_set": "tx"}}, "default_class": "tx"}), "p"
    )
    topic_arn, queue_arn = account.arn("sns", names.topic), account.arn("sqs", names.queue)
    full = {"MessageRetentionPeriod": "1209600"}
    existing = sa.Existing(
        configuration_sets={"tx": [sa.Destination("whatever", True, frozenset(sa.EVENT_TYPES), topic_arn)]},
        topics={names.topic: topic_arn},
        queues={
            names.dead_letter_queue: sa.Queue("u1", full),
            names.queue: sa.Queue(
                "u2",
                {
                    **full,
                    "RedrivePolicy": sa.redrive_policy(account.arn("sqs", names.dead_letter_queue)),
                    "Policy": json.dumps({"Statement": sa.policy_statement(queue_arn, topic_arn, "x")}),
                },
            ),
        },
        subscriptions={topic_arn: [sa.Subscription("arn:sub", queue_arn, raw=False)]},
    )
    steps = sa.plan([names], existing, account, api="v2", prefix="p")
    assert [s.action for s in steps] == ["exists"] * 8
    assert all(not s.call for s in steps)
    # The same set seen through v1 (8 types) is complete for v1 but lacks two for v2.
    v1_view = sa.Destination("whatever", True, frozenset(sa.V1_EVENT_TYPES), topic_arn)
    existing.configuration_sets["tx"] = [v1_view]
    assert sa.plan([names], existing, account, api="v1", prefix="p")[-1].action == "exists"
    last = sa.plan([names], existing, account, api="v2", prefix="p")[-1]
    assert (last.action, last.detail) == ("differs", "lacks DELIVERY_DELAY, SUBSCRIPTION; left alone")


def test_canonical_event_type_names() -> None:
    assert [sa.canonical_type(t) for t in ("renderingFailure", "DELIVERY_DELAY", "subscription", "open")] == [
        "RENDERING_FAILURE",
        "DELIVERY_DELAY",
        "SUBSCRIPTION",
        "OPEN",
    ]


def test_updated_config_and_toml_round_trip() -> None:
    source = {
        "default_class": "tx",
        "classes": {"tx": {"configuration_set": "tx"}, "news": {}},
        "ses": {"retry_max_age": "90m", "endpoint_url": "http://localhost:4566"},
        "dkim": {"example.com": {"selector": "s1", "key_file": "/keys/example.com.pem"}},
        "listeners": [{"listen": "0.0.0.0:2525", "allow_networks": ["10.1.0.0/16"]}],
        "notices": {"routes": {"example.org": "lmtp://127.0.0.1:24"}},
        "feedback": {"queue_urls": ["https://q/1"]},
    }
    config = configuration.from_dict(source)
    names = sa.class_names(config, "p")
    data = sa.updated_config(
        config_data(config), names, {"tx": "https://q/2", "news": "https://q/1"}, "eu-west-1"
    )
    assert data["feedback"]["queue_urls"] == ["https://q/1", "https://q/2"]
    assert data["classes"]["news"] == {"configuration_set": "p-news"}
    text = dumps(data)
    again = configuration.from_dict(tomllib.loads(text))
    assert again.ses.region == "eu-west-1" and again.ses.retry_max_age.total_seconds() == 5400
    assert again.dkim["example.com"].selector == "s1"
    assert again.listeners[0].allow_networks == ("10.1.0.0/16",)
    assert again.notices.routes == {"example.org": "lmtp://127.0.0.1:24"}
    assert config_data(Config()) == {}
