"""LeanSes's transport against real sockets: TLS with botocore's CA bundle, the connection
pool shared by threads, botocore's endpoint precedence, proxies; and the worker sending
with it, logging no credential."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.sending.ses_api import Disposition
from relay.sending.ses_lean import LeanSes
from tests.conftest import wait_until
from tests.support.fake_ses import FakeSes
from tests.support.samples import request
from tests.support.security import make_cert
from tests.support.ses_pair import (
    REGION,
    answering,
    boto,
    clean_aws_env,
    dead_url,
    failure,
    lean,
    seen,
    send_concurrently,
)  # fmt: skip


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_aws_env(monkeypatch)


@pytest.fixture
def fake(aws_env: None) -> Iterator[FakeSes]:
    with FakeSes() as server:
        yield server


def test_https_with_the_ca_bundle_botocore_would_use(
    aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = make_cert(tmp_path / "tls")
    ok = b"<SendRawEmailResponse><SendRawEmailResult><MessageId>m-tls</MessageId></SendRawEmailResult>"
    with answering(200, ok, tls=cert) as url:
        with lean(url) as ses, boto(url) as reference:  # not trusted yet: the same refusal
            err, expected = failure(ses), failure(reference)
        assert (err.code, err.disposition, err.extra["kind"]) == ("SSLError", Disposition.RETRY, "network")
        assert seen(err)[:4] == seen(expected)[:4]
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert.cert))
        with lean(url) as ses:
            assert [ses.send_raw(request()) for _ in range(3)] == ["m-tls"] * 3
            assert len(ses._http._idle) == 1  # type: ignore[union-attr]  # one connection, kept alive


# --- the pool, the endpoint, the proxy -------------------------------------------------


@pytest.mark.solo  # times 16 calls: runs alone (see Makefile)
def test_one_client_serves_concurrent_threads(fake: FakeSes) -> None:
    """`concurrency` connections: 16 calls of 0.2 s on 8 threads take ~0.4 s, not 3.2 s."""
    fake.latency = 0.2
    with LeanSes(region=REGION, endpoint_url=fake.url, concurrency=8) as ses:
        errors, elapsed = send_concurrently(ses)
        assert len(ses._http._idle) <= 8  # type: ignore[union-attr]
    assert not errors
    assert len(fake.calls) == 16
    assert elapsed < 1.5, f"16 calls took {elapsed:.2f}s"


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        ("fake", {"AWS_ENDPOINT_URL": "dead", "AWS_ENDPOINT_URL_SES": "dead"}, "fake"),
        (
            "",
            {"AWS_ENDPOINT_URL": "dead", "AWS_ENDPOINT_URL_SES": "fake", "AWS_ENDPOINT_URL_SESV2": "dead"},
            "fake",
        ),
        ("", {"AWS_ENDPOINT_URL": "fake", "AWS_ENDPOINT_URL_SESV2": "dead"}, "fake"),
    ],
    ids=["setting-beats-environment", "service-variable-beats-global", "global-variable"],
)
def test_endpoint_precedence_is_botocores(
    fake: FakeSes, monkeypatch: pytest.MonkeyPatch, setting: str, env: dict[str, str], expected: str
) -> None:
    urls = {"fake": fake.url, "dead": dead_url(), "": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, urls[value])
    with lean(urls[setting]) as ses, boto(urls[setting]) as reference:
        assert ses.endpoint_url == reference.endpoint_url == urls[expected]
        ses.send_raw(request())
        assert ses._boto is None  # a configured endpoint needs no boto3 client
    assert len(fake.calls) == 1


def test_no_configured_endpoint_means_aws_as_boto3_resolves_it(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    with lean("") as ses:
        assert ses.endpoint_url == "https://email-fips.eu-west-2.amazonaws.com"


def test_a_proxy_in_the_environment_is_used(fake: FakeSes, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY as botocore honours it: the fake plays the proxy, the endpoint itself is dead."""
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    with lean(dead_url()) as ses:
        ses.send_raw(request())
    assert len(fake.calls) == 1
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with lean(dead_url()) as ses:
        assert failure(ses).code == "EndpointConnectionError"


# --- in the worker ----------------------------------------------------------------------


def test_the_worker_sends_with_it_and_logs_no_credential_even_at_debug(relay_factory, fake: FakeSes) -> None:
    from tests.support.smtp import message, send, submission_id

    secret, token = "s3cr3t-Zq9-worker-never-logs", "t0ken-Zq9-worker-never-logs"
    env = {"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token, "SES_RELAY_LOG_LEVEL": "debug"}
    relay = relay_factory(f'[ses]\nendpoint_url = "{fake.url}"\nmax_send_rate = 100.0\n', env=env)
    code, reply = send(relay, ["someone@example.org"], message("lean"))
    assert code == 250
    [call] = fake.wait_for_calls(1, timeout=20)
    sid = submission_id(reply)
    wait_until(lambda: f"{sid}: sent to 1 recipient(s) as {call.message_id}" in relay.log(), what="the send")
    log = relay.log()
    assert "CanonicalRequest" in log  # botocore's signer did log, at debug
    assert secret not in log and token not in log
