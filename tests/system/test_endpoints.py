"""AWS endpoints as boto3 users expect them: botocore's precedence, `[ses] endpoint_url` for SES only.

The SES side is the fault-injecting fake (it speaks SES and nothing else), the SQS side
moto's server, and every other endpoint a port where nothing listens: a client that
took the wrong endpoint fails, so each test shows which variable or setting won.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port, run_cli, wait_until
from tests.support.fake_ses import FakeSes
from tests.support.smtp import message, send, submission_id
from tests.support.sns_sqs import bounce, ses_mail

REGION = "us-east-1"
RCPT = "someone@example.org"


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with FakeSes() as server:
        yield server


@pytest.fixture
def queue(moto_server: str) -> str:
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    return sqs.create_queue(QueueName=f"endpoints-{secrets.token_hex(4)}")["QueueUrl"]


def put(moto_server: str, queue_url: str, payload: dict) -> None:
    """An SES event in the queue, as SNS raw message delivery leaves it."""
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(payload))


def status_of(relay, sid: str) -> dict:
    [recipient] = relay.json("submission", "show", sid)["recipients"]
    return recipient


@pytest.mark.parametrize(
    ("api", "variable"), [("v1", "AWS_ENDPOINT_URL_SES"), ("v2", "AWS_ENDPOINT_URL_SESV2")]
)
def test_the_ses_variable_beats_aws_endpoint_url_for_sending(
    relay_factory, fake_ses: FakeSes, api: str, variable: str
) -> None:
    env = {"AWS_ENDPOINT_URL": dead_url(), variable: fake_ses.url}
    relay = relay_factory(f'[ses]\napi = "{api}"\nmax_send_rate = 100.0\n', env=env)
    code, reply = send(relay, [RCPT], message("by the service variable"))
    assert code == 250
    sid = submission_id(reply)
    [call] = fake_ses.wait_for_calls(1, timeout=20)
    assert call.api == api
    shown = wait_until(
        lambda: (r := status_of(relay, sid))["status"] == "sent" and r, what="the send recorded"
    )
    assert shown["ses_message_id"] == call.message_id


def test_ses_setting_for_sending_and_the_sqs_variable_for_the_consumer(
    relay_factory, fake_ses: FakeSes, moto_server: str, queue: str
) -> None:
    """[ses] endpoint_url is the SES-only fake; the worker's consumer must not use it for SQS."""
    config = (
        f'[ses]\nendpoint_url = "{fake_ses.url}"\nmax_send_rate = 100.0\n'
        f'[feedback]\nqueue_urls = ["{queue}"]\n'
    )
    env = {
        "AWS_ENDPOINT_URL": dead_url(),
        "AWS_ENDPOINT_URL_SES": dead_url(),  # [ses] endpoint_url, when set, wins over this
        "AWS_ENDPOINT_URL_SQS": moto_server,
    }
    relay = relay_factory(config, env=env)
    code, reply = send(relay, [RCPT], message("two endpoints"))
    assert code == 250
    sid = submission_id(reply)
    [call] = fake_ses.wait_for_calls(1, timeout=20)
    wait_until(lambda: status_of(relay, sid)["status"] == "sent", what="the send recorded")

    put(moto_server, queue, bounce(ses_mail(call.message_id, [RCPT], submission_id=sid), [RCPT], "Permanent"))
    wait_until(
        lambda: status_of(relay, sid)["status"] == "bounced",
        timeout=40,
        what="the bounce read from SQS through AWS_ENDPOINT_URL_SQS",
    )
    assert relay.json("suppression", "show", RCPT)["suppressions"]
    assert "Could not connect" not in relay.log()


def test_feedback_consume_takes_the_sqs_variable_not_the_ses_setting(
    tmp_path: Path, moto_server: str, queue: str
) -> None:
    config = tmp_path / "ses-relay.toml"
    config.write_text(f'[ses]\nendpoint_url = "{dead_url()}"\n')
    put(moto_server, queue, bounce(ses_mail("endpoints-0001", [RCPT], tags=False), [RCPT], "Permanent"))
    data = tmp_path / "data"
    args = ("feedback", "consume", "--once", "--queue-url", queue)

    env = {"AWS_ENDPOINT_URL": dead_url(), "AWS_ENDPOINT_URL_SQS": moto_server}
    result = run_cli(*args, data_dir=data, config=config, env=env)
    assert result.returncode == 0, result.stderr
    assert "applied 1 event(s)" in result.stdout
    shown = json.loads(run_cli("suppression", "show", RCPT, "--json", data_dir=data, check=True).stdout)
    assert shown["suppressions"][0]["cause"] == "bounce"


def test_feedback_consume_falls_back_on_aws_endpoint_url(
    tmp_path: Path, moto_server: str, queue: str
) -> None:
    put(moto_server, queue, bounce(ses_mail("endpoints-0002", [RCPT], tags=False), [RCPT], "Permanent"))
    args = ("feedback", "consume", "--once", "--queue-url", queue)
    result = run_cli(*args, data_dir=tmp_path / "data", env={"AWS_ENDPOINT_URL": moto_server})
    assert result.returncode == 0, result.stderr
    assert "applied 1 event(s)" in result.stdout
