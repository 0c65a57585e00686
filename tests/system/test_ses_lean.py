"""LeanSes against real HTTP: moto (which checks SigV4 signatures when asked) and FakeSes.

Every failure is compared with what BotoSes makes of the same answer from the same
server: the lean client must speak the same vocabulary (code, HTTP status,
disposition, kind, message) as the boto3 path it replaces. Its transport (TLS, the
pool, endpoints, proxies) and the worker using it: test_ses_lean_transport.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from relay.sending.ses_api import Disposition
from tests.conftest import free_port
from tests.support.fake_ses import FakeSes
from tests.support.moto_ses import recorded_sends, recording, sent_messages
from tests.support.samples import RAW, request
from tests.support.ses_pair import (
    REGION,
    answering,
    boto,
    clean_aws_env,
    dead_url,
    failure,
    lean,
    seen,
    verified_moto,
)  # fmt: skip


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_aws_env(monkeypatch)


@pytest.fixture
def fake(aws_env: None) -> Iterator[FakeSes]:
    with FakeSes() as server:
        yield server


# --- against moto ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_ses(moto_server: str) -> str:
    return verified_moto(moto_server)


def test_send_reaches_moto_with_configuration_set_and_tags(
    aws_env: None, moto_ses: str, tmp_path: Path
) -> None:
    before = len(sent_messages(REGION))
    with recording(moto_ses, tmp_path / "moto.rec"), lean(moto_ses) as ses:
        message_id = ses.send_raw(request(destinations=("carol@example.net", "dave@example.net")))
    [stored] = sent_messages(REGION)[before:]
    assert stored.id == message_id  # type: ignore[attr-defined]
    assert stored.raw_data == RAW.decode()  # type: ignore[attr-defined]
    [sent] = recorded_sends(moto_ses)
    assert (sent.api, sent.source, sent.raw) == ("v1", "alice@example.com", RAW)
    assert sent.destinations == ("carol@example.net", "dave@example.net")
    assert sent.configuration_set == "tx"
    assert sent.tags == (("message-class", "transactional"), ("submission-id", "S-1"))


def test_unverified_sender_is_rejected_as_boto3_rejects_it(aws_env: None, moto_ses: str) -> None:
    bad = {"source": "mallory@unverified.example", "raw": RAW.replace(b"alice@", b"m@")}
    with lean(moto_ses) as ses, boto(moto_ses) as reference:
        err, expected = failure(ses, **bad), failure(reference, **bad)
    assert seen(err) == seen(expected)
    assert (err.code, err.disposition, err.extra["kind"]) == (
        "MessageRejected",
        Disposition.PERMANENT,
        "rejected",
    )
    assert isinstance(err.__cause__, ClientError)


def test_max_send_rate_goes_through_boto3(aws_env: None, moto_ses: str) -> None:
    with lean(moto_ses) as ses:
        assert ses._boto is None  # not built until a call other than SendRawEmail needs it
        assert ses.max_send_rate() == 1.0
        assert ses._boto is not None and ses._boto.endpoint_url == moto_ses


@pytest.fixture
def iam_user(aws_env: None, moto_ses: str) -> Iterator[tuple[str, str]]:
    """An access key moto knows, allowed to send; moto checks every signature meanwhile."""
    from moto.core.authorization import enable_iam_authentication

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_ses)
    name = f"relay-{free_port()}"
    iam.create_user(UserName=name)
    policy = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ses:*", "Resource": "*"}]}'
    )
    iam.put_user_policy(UserName=name, PolicyName="send", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    with enable_iam_authentication():
        yield key["AccessKeyId"], key["SecretAccessKey"]


def _as(monkeypatch: pytest.MonkeyPatch, key_id: str, secret: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_moto_accepts_the_signature(
    iam_user: tuple[str, str], moto_ses: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as(monkeypatch, *iam_user)
    before = len(sent_messages(REGION))
    with lean(moto_ses) as ses:
        message_id = ses.send_raw(request())
    assert [m.id for m in sent_messages(REGION)[before:]] == [message_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("which", "code"), [("wrong secret", "SignatureDoesNotMatch"), ("unknown key", "InvalidClientTokenId")]
)
def test_bad_credentials_are_held_as_boto3_holds_them(
    iam_user: tuple[str, str], moto_ses: str, monkeypatch: pytest.MonkeyPatch, which: str, code: str
) -> None:
    key_id, secret = iam_user
    _as(monkeypatch, key_id if which == "wrong secret" else "AKIAUNKNOWNKEY000000", secret[::-1])
    with lean(moto_ses) as ses, boto(moto_ses) as reference:
        err, expected = failure(ses), failure(reference)
    assert seen(err) == seen(expected)
    assert (err.code, err.http_status, err.disposition, err.extra["kind"]) == (
        code, 403, Disposition.RETRY, "auth",
    )  # fmt: skip
    assert secret not in str(err) and secret[::-1] not in str(err)


# --- against FakeSes: what SES receives ------------------------------------------------


def test_every_parameter_arrives_as_boto3_sends_it(fake: FakeSes) -> None:
    arn = "arn:aws:ses:eu-west-2:123456789012:identity/example.com"
    sent = request(
        destinations=("bob@example.org", "carol+x@example.net"),
        tags=(("message-class", "list"), ("submission-id", "S-2"), ("app", "a b/c=d&e")),
        source="bounces+x=y@example.com",
        source_arn=arn,
        from_arn=arn + "/from",
        return_path_arn=arn + "/rp",
    )
    with lean(fake.url) as ses:
        message_id = ses.send_raw(sent)
    with boto(fake.url) as reference:
        reference.send_raw(sent)
    mine, theirs = fake.calls
    assert mine.message_id == message_id
    fields = ("raw", "source", "destinations", "configuration_set", "tags", "source_arn", "from_arn")
    assert [getattr(mine, f) for f in (*fields, "return_path_arn")] == [
        getattr(theirs, f) for f in (*fields, "return_path_arn")
    ]
    assert mine.tags[2] == ("app", "a b/c=d&e")


def test_unset_optionals_are_not_sent(fake: FakeSes) -> None:
    with lean(fake.url) as ses:
        ses.send_raw(request(configuration_set=None, tags=()))
    [call] = fake.calls
    assert (call.configuration_set, call.tags, call.source_arn, call.return_path_arn) == (
        None,
        (),
        None,
        None,
    )


# --- against FakeSes: each failure named as BotoSes names it ----------------------------

HTTP_FAILURES = [
    ("Throttling", "Maximum sending rate exceeded.", 400),
    ("Throttling", "Daily message quota exceeded.", 400),
    ("MessageRejected", "Email address is not verified. <x> & co", 400),
    ("InternalFailure", "it went wrong", 500),
    ("ServiceUnavailable", "it went wrong", 503),
    ("SomethingNew", "it went wrong", 502),
    ("ConfigurationSetDoesNotExist", "Configuration set <tx> does not exist.", 400),
    ("AccountSendingPausedException", "paused", 400),
    ("InvalidClientTokenId", "The security token included in the request is invalid.", 403),
    ("SomethingElseNew", "it went wrong", 400),
]


@pytest.mark.parametrize(("code", "message", "status"), HTTP_FAILURES)
def test_error_answers_are_classified_as_boto3_classifies_them(
    fake: FakeSes, code: str, message: str, status: int
) -> None:
    fake.fail_next(2, code, message, status)
    with lean(fake.url) as ses, boto(fake.url) as reference:
        err, expected = failure(ses), failure(reference)
    assert seen(err) == seen(expected)
    assert (err.code, err.http_status, err.message) == (code, status, message)
    assert err.extra["request_id"]
    assert isinstance(err.__cause__, ClientError)
    assert fake.attempts == 2  # one each: no retries behind the worker's back


@pytest.mark.parametrize("body", [b"", b"<html><body>502 Bad Gateway</body></html>"])
def test_a_5xx_that_is_not_ses_xml_is_named_as_botocore_names_it(aws_env: None, body: bytes) -> None:
    with answering(502, body) as url, lean(url) as ses, boto(url) as reference:
        err, expected = failure(ses), failure(reference)
    assert seen(err) == seen(expected)
    assert (err.code, err.http_status, err.disposition, err.extra["kind"]) == (
        "502", 502, Disposition.RETRY, "server",
    )  # fmt: skip


def test_a_4xx_page_that_is_not_ses_xml_is_named_as_botocore_names_it(aws_env: None) -> None:
    with answering(403, b"<html>denied by a proxy</html>") as url, lean(url) as ses, boto(url) as reference:
        err, expected = failure(ses), failure(reference)
    # the message is botocore's text for an error without one, where boto3's retry handler
    # adds "(reached max retries: 0)"
    assert seen(err)[:4] == seen(expected)[:4]
    assert (err.code, err.http_status, err.disposition) == ("HTTP403", 403, Disposition.PERMANENT)


def test_an_answer_that_cannot_be_read_is_retried(aws_env: None) -> None:
    """boto3 lets botocore's ResponseParserError out unclassified (the sender retries it as
    an internal error); the lean client names it, and it is retried the same way."""
    from botocore.parsers import ResponseParserError

    with answering(403, b"denied") as url, lean(url) as ses, boto(url) as reference:
        err = failure(ses)
        with pytest.raises(ResponseParserError):
            reference.send_raw(request())
    assert (err.code, err.http_status, err.disposition) == ("ResponseParserError", 403, Disposition.RETRY)
    with answering(200, b"<SendRawEmailResponse/>") as url, lean(url) as ses:
        assert failure(ses).code == "ResponseParserError"


def test_throttling_then_the_next_call_goes_through(fake: FakeSes) -> None:
    fake.fail_next(1, "Throttling", "Maximum sending rate exceeded.", 400)
    with lean(fake.url) as ses:
        assert failure(ses).retryable
        ses.send_raw(request())
    assert (fake.attempts, len(fake.calls)) == (2, 1)


def test_dropped_connection_is_connection_closed_as_with_boto3(fake: FakeSes) -> None:
    fake.drop_next(2)
    with lean(fake.url) as ses, boto(fake.url) as reference:
        err, expected = failure(ses), failure(reference)
        assert (err.code, err.disposition, err.http_status) == (
            "ConnectionClosedError",
            Disposition.RETRY,
            None,
        )
        assert seen(err) == seen(expected)
        ses.send_raw(request())  # a fresh connection
    assert len(fake.calls) == 1


def test_refused_before_any_connection_is_endpoint_connection_error(aws_env: None) -> None:
    url = dead_url()
    with lean(url) as ses, boto(url) as reference:
        err, expected = failure(ses), failure(reference)
    assert seen(err) == seen(expected)
    assert (err.code, err.disposition, err.extra["kind"]) == (
        "EndpointConnectionError",
        Disposition.RETRY,
        "network",
    )
    assert isinstance(err.__cause__, EndpointConnectionError)


def test_a_server_gone_away_is_noticed_and_the_pool_recovers(fake: FakeSes) -> None:
    with lean(fake.url) as ses:
        ses.send_raw(request())  # a kept-alive connection now sits in the pool
        port = fake.port
        fake.stop_listening()  # closes it too
        err = failure(ses)
        assert (err.disposition, err.http_status, err.extra["kind"]) == (Disposition.RETRY, None, "network")
        assert err.code == "EndpointConnectionError"  # the dead pooled one was not used
        fake.start_listening()
        assert fake.port == port
        ses.send_raw(request())
    assert len(fake.calls) == 2


def test_read_timeout_is_read_timeout_error(fake: FakeSes) -> None:
    fake.latency = 10.0
    started = time.monotonic()
    with lean(fake.url, read_timeout=0.2) as ses, boto(fake.url, read_timeout=0.2) as reference:
        err, expected = failure(ses), failure(reference)
    assert time.monotonic() - started < 5.0
    assert seen(err) == seen(expected)
    assert (err.code, err.disposition, err.extra["kind"]) == (
        "ReadTimeoutError",
        Disposition.RETRY,
        "network",
    )


def test_missing_credentials_are_held_as_boto3_holds_them(
    fake: FakeSes, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    with lean(fake.url) as ses, boto(fake.url) as reference:
        err, expected = failure(ses), failure(reference)
    assert seen(err) == seen(expected)
    assert (err.code, err.disposition, err.extra["kind"]) == ("NoCredentialsError", Disposition.RETRY, "auth")
    assert isinstance(err.__cause__, NoCredentialsError)
    assert fake.attempts == 0


def test_a_request_boto3_would_not_build_is_permanent_and_not_sent(fake: FakeSes) -> None:
    with lean(fake.url) as ses:
        err = failure(ses, configuration_set=123)
    assert (err.code, err.disposition) == ("ParamValidationError", Disposition.PERMANENT)
    assert fake.attempts == 0


def test_credentials_never_reach_the_logs(
    fake: FakeSes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Zq9-never-logged"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with caplog.at_level(logging.DEBUG), lean(fake.url) as ses:
        ses.send_raw(request())
        fake.fail_next(1, "SignatureDoesNotMatch", "The request signature we calculated does not match", 403)
        err = failure(ses)
    assert caplog.records  # botocore's signer does log at debug: the canonical request, not the key
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in str(err) and secret not in repr(err)
