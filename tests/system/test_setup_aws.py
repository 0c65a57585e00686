"""`ses-relay setup-aws` against moto running as a server.

The default (SESv2) path runs against SesV2Gaps: moto with the SESv2 event
destination operations moto 5.2 lacks answered in front of it; `--ses-api v1` runs
against plain moto. Every resource is then read back with boto3, a second run must
change nothing, `--dry-run` must leave nothing behind, and an SES event published to
a created topic must reach the relay's store through the created queue with the
printed configuration. The moto server is shared by the session, so every test uses
its own prefix and configuration-set names.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from relay import config as configuration
from tests.conftest import cli_json, run_cli
from tests.support.sesv2_gaps import SesV2Gaps
from tests.support.sns_sqs import bounce, ses_mail

REGION = "us-east-1"
ALL_TYPES = {
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
}


@pytest.fixture
def aws(moto_server: str) -> Iterator[SesV2Gaps]:
    with SesV2Gaps(moto_server) as gaps:
        yield gaps


def setup_config(tmp_path: Path, endpoint: str, tag: str, extra: str = "") -> Path:
    path = tmp_path / "ses-relay.toml"
    path.write_text(
        f'[ses]\nregion = "{REGION}"\nendpoint_url = "{endpoint}"\n'
        f'[classes.transactional]\nconfiguration_set = "tx-{tag}"\n'
        f"[classes.bulk]\n" + extra  # no configuration set: setup-aws names one
    )
    return path


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def aws_env(config: Path) -> dict[str, str]:
    """[ses] endpoint_url is for SES only: SNS, SQS and STS reach the same server through
    AWS_ENDPOINT_URL, as a user pointing everything at one emulator would set it."""
    endpoint = tomllib.loads(config.read_text()).get("ses", {}).get("endpoint_url", "")
    return {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}


def setup(tmp_path: Path, config: Path, *args: str) -> Any:
    return run_cli("setup-aws", *args, data_dir=tmp_path / "data", config=config, env=aws_env(config))


def outcomes(stdout: str) -> list[str]:
    """The first word of each step line (comments in the TOML output)."""
    lines = [line.removeprefix("# ") for line in stdout.splitlines()]
    return [
        line.split()[0]
        for line in lines
        if line.split()[:1] in (["created"], ["exists"], ["updated"], ["differs"], ["will"])
    ]


def nothing_exists(endpoint: str, prefix: str, sets: list[str], gaps: SesV2Gaps | None) -> None:
    sqs, sns = client("sqs", endpoint), client("sns", endpoint)
    assert sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []) == []
    assert not [t for t in sns.list_topics()["Topics"] if f":{prefix}-" in t["TopicArn"]]
    for name in sets:
        with pytest.raises(ClientError):
            client("sesv2", endpoint).get_configuration_set(ConfigurationSetName=name)
    if gaps is not None:
        assert not any(gaps.event_destinations.get(name) for name in sets)


def test_creates_everything_then_a_second_run_changes_nothing(tmp_path: Path, aws: SesV2Gaps) -> None:
    tag = secrets.token_hex(3)
    prefix = f"t{tag}"
    sets = [f"tx-{tag}", f"{prefix}-bulk"]
    config = setup_config(tmp_path, aws.url, tag)

    dry = setup(tmp_path, config, "--prefix", prefix, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert outcomes(dry.stdout) == ["will"] * 16
    assert "16 to create, 0 to update, 0 already existed" in dry.stdout
    nothing_exists(aws.url, prefix, sets, aws)

    first = setup(tmp_path, config, "--prefix", prefix)
    assert first.returncode == 0, first.stderr
    assert outcomes(first.stdout) == ["created"] * 16
    printed = tomllib.loads(first.stdout)  # the whole output is TOML: step lines are comments
    loaded = configuration.from_dict(printed)
    assert {k: c.configuration_set for k, c in loaded.classes.items()} == {
        "transactional": f"tx-{tag}",
        "bulk": f"{prefix}-bulk",
    }
    assert loaded.ses.endpoint_url == aws.url

    sqs, sns, sesv2 = client("sqs", aws.url), client("sns", aws.url), client("sesv2", aws.url)
    account = client("sts", aws.url).get_caller_identity()["Account"]
    urls = dict(zip(["transactional", "bulk"], loaded.feedback.queue_urls, strict=True))
    for klass, cset in zip(["transactional", "bulk"], sets, strict=True):
        queue, dlq = f"{prefix}-{klass}-events", f"{prefix}-{klass}-events-dlq"
        topic_arn = f"arn:aws:sns:{REGION}:{account}:{prefix}-{klass}-events"
        queue_arn = f"arn:aws:sqs:{REGION}:{account}:{queue}"
        assert urls[klass] == sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=urls[klass], AttributeNames=["All"])["Attributes"]
        assert attrs["MessageRetentionPeriod"] == "1209600"
        redrive = json.loads(attrs["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == 4
        assert redrive["deadLetterTargetArn"] == f"arn:aws:sqs:{REGION}:{account}:{dlq}"
        dlq_url = sqs.get_queue_url(QueueName=dlq)["QueueUrl"]
        dlq_attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
        assert dlq_attrs["MessageRetentionPeriod"] == "1209600"
        [statement] = json.loads(attrs["Policy"])["Statement"]
        assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == queue_arn
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": topic_arn}}
        [sub] = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        assert (sub["Protocol"], sub["Endpoint"]) == ("sqs", queue_arn)
        sub_attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
        assert sub_attrs.get("RawMessageDelivery", "false") == "false"
        assert sesv2.get_configuration_set(ConfigurationSetName=cset)["ConfigurationSetName"] == cset
        [dest] = sesv2.get_configuration_set_event_destinations(ConfigurationSetName=cset)[
            "EventDestinations"
        ]
        assert dest["Name"] == f"{prefix}-{klass}-sns" and dest["Enabled"] is True
        assert set(dest["MatchingEventTypes"]) == ALL_TYPES
        assert dest["SnsDestination"] == {"TopicArn": topic_arn}

    second = setup(tmp_path, config, "--prefix", prefix)
    assert second.returncode == 0, second.stderr
    assert outcomes(second.stdout) == ["exists"] * 16
    assert "0 created, 0 updated, 16 already existed, 0 differ" in second.stdout
    assert tomllib.loads(second.stdout) == printed
    for klass, cset in zip(["transactional", "bulk"], sets, strict=True):
        topic_arn = f"arn:aws:sns:{REGION}:{account}:{prefix}-{klass}-events"
        assert len(sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]) == 1
        assert len(aws.event_destinations[cset]) == 1
    assert len(sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]) == 4

    # The plumbing carries SES's events: publish a bounce to the bulk topic, consume with the
    # printed configuration, and the address is suppressed.
    printed_config = tmp_path / "printed.toml"
    printed_config.write_text(first.stdout)
    mail = ses_mail(f"0100018e{tag}-0000", ["gone@example.com"], klass="bulk")
    sns.publish(
        TopicArn=f"arn:aws:sns:{REGION}:{account}:{prefix}-bulk-events",
        Message=json.dumps(bounce(mail, ["gone@example.com"], "Permanent", "NoEmail")),
    )
    data = tmp_path / "relay"
    consumed = run_cli(
        "feedback", "consume", "--once", data_dir=data, config=printed_config, check=True,
        env=aws_env(printed_config),
    )  # fmt: skip
    assert "applied 1 event(s)" in consumed.stdout
    [entry] = cli_json("suppression", "list", data_dir=data, config=printed_config)
    assert (entry["address"], entry["class"], entry["cause"]) == ("gone@example.com", "*", "bounce")


def test_ses_v1_against_plain_moto(tmp_path: Path, moto_server: str) -> None:
    tag = secrets.token_hex(3)
    prefix = f"v{tag}"
    config = setup_config(tmp_path, moto_server, tag)
    dry = setup(tmp_path, config, "--prefix", prefix, "--ses-api", "v1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    nothing_exists(moto_server, prefix, [f"tx-{tag}", f"{prefix}-bulk"], None)

    first = setup(tmp_path, config, "--prefix", prefix, "--ses-api", "v1")
    assert first.returncode == 0, first.stderr
    assert outcomes(first.stdout) == ["created"] * 16
    assert "SESv1 cannot publish DELIVERY_DELAY or SUBSCRIPTION" in first.stdout
    ses = client("ses", moto_server)
    described = ses.describe_configuration_set(
        ConfigurationSetName=f"tx-{tag}", ConfigurationSetAttributeNames=["eventDestinations"]
    )
    [dest] = described["EventDestinations"]
    assert set(dest["MatchingEventTypes"]) == {
        "send",
        "delivery",
        "bounce",
        "complaint",
        "reject",
        "renderingFailure",
        "open",
        "click",
    }
    assert dest["SNSDestination"]["TopicARN"].endswith(f":{prefix}-transactional-events")

    second = setup(tmp_path, config, "--prefix", prefix, "--ses-api", "v1")
    assert outcomes(second.stdout) == ["exists"] * 16


def test_a_failed_run_stops_at_the_step_and_the_next_run_resumes(tmp_path: Path, moto_server: str) -> None:
    # Plain moto has no SESv2 event destinations: the v2 run gets as far as creating them.
    tag = secrets.token_hex(3)
    prefix = f"f{tag}"
    config = tmp_path / "one.toml"
    config.write_text(
        f'[ses]\nendpoint_url = "{moto_server}"\n[classes.transactional]\nconfiguration_set = "tx-{tag}"\n'
    )
    failed = setup(tmp_path, config, "--prefix", prefix)
    assert failed.returncode == 1
    assert outcomes(failed.stdout) == ["created"] * 7
    assert "ses event destination" in failed.stderr and "404" in failed.stderr
    resumed = setup(tmp_path, config, "--prefix", prefix, "--ses-api", "v1")
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(resumed.stdout) == ["exists"] * 7 + ["created"]


def test_existing_resources_are_added_to_never_replaced(tmp_path: Path, aws: SesV2Gaps) -> None:
    tag = secrets.token_hex(3)
    prefix = f"e{tag}"
    sqs = client("sqs", aws.url)
    account = client("sts", aws.url).get_caller_identity()["Account"]
    queue = f"{prefix}-transactional-events"
    queue_arn = f"arn:aws:sqs:{REGION}:{account}:{queue}"
    theirs = {
        "Sid": "Theirs",
        "Effect": "Allow",
        "Principal": {"AWS": account},
        "Action": "sqs:*",
        "Resource": queue_arn,
    }
    other_dlq = f"arn:aws:sqs:{REGION}:{account}:{prefix}-elsewhere"
    sqs.create_queue(QueueName=f"{prefix}-elsewhere")
    url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "MessageRetentionPeriod": "1209600",
            "Policy": json.dumps({"Version": "2012-10-17", "Statement": [theirs]}),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": other_dlq, "maxReceiveCount": "10"}),
        },
    )["QueueUrl"]
    config = tmp_path / "one.toml"
    config.write_text(
        f'[ses]\nendpoint_url = "{aws.url}"\n[classes.transactional]\n'
        f'configuration_set = "tx-{tag}"\n[feedback]\nqueue_urls = ["https://keep.example/q"]\n'
    )

    done = setup(tmp_path, config, "--prefix", prefix)
    assert done.returncode == 0, done.stderr
    lines = [line.removeprefix("# ") for line in done.stdout.splitlines()]
    assert any(line.startswith("exists      sqs queue ") for line in lines)
    assert any(line.startswith("differs     sqs redrive policy") and "10 receives" in line for line in lines)
    assert any(line.startswith("updated     sqs queue policy") for line in lines)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"] == other_dlq  # left alone
    statements = json.loads(attrs["Policy"])["Statement"]
    assert statements[0] == theirs and len(statements) == 2  # theirs kept, ours added
    assert statements[1]["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(f":{queue}")
    # Configured queue URLs stay, ours follows.
    assert tomllib.loads(done.stdout)["feedback"]["queue_urls"] == ["https://keep.example/q", url]

    again = setup(tmp_path, config, "--prefix", prefix)
    assert "0 created, 0 updated, 7 already existed, 1 differ (left alone)" in again.stdout


def test_write_config_keeps_a_backup(tmp_path: Path, aws: SesV2Gaps) -> None:
    tag = secrets.token_hex(3)
    config = tmp_path / "one.toml"
    original = (
        f'# mine\n[ses]\nendpoint_url = "{aws.url}"\n[classes.transactional]\n'
        f'configuration_set = "tx-{tag}"\n[limits]\nrecipients = 50\n'
    )
    config.write_text(original)
    done = setup(tmp_path, config, "--prefix", f"w{tag}", "--write-config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("created ")  # plain lines when the config goes to a file
    assert f"wrote {config}" in done.stdout
    assert (tmp_path / "one.toml.bak").read_text() == original
    written = configuration.load(config)
    assert written.limits.recipients == 50  # the operator's settings survive
    assert len(written.feedback.queue_urls) == 1


def test_bad_prefix_is_a_usage_error(tmp_path: Path, aws: SesV2Gaps) -> None:
    config = setup_config(tmp_path, aws.url, "x")
    done = setup(tmp_path, config, "--prefix", "no spaces")
    assert done.returncode == 2
    assert "--prefix" in done.stderr
