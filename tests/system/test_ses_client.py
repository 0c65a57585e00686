"""BotoSes against real HTTP: moto for the happy path, FakeSes for every way SES can fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from relay.sending.ses_api import Disposition, SesError
from relay.sending.ses_client import BotoSes
from tests.conftest import free_port
from tests.support.fake_ses import Drop, Failure, FakeRequest, FakeSes
from tests.support.moto_ses import recorded_sends, recording, sent_messages
from tests.support.samples import RAW, request
from tests.support.ses_pair import send_concurrently, verified_moto

REGION = "eu-west-2"  # moto's backends are per process; a region of our own keeps its lists ours
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SES", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SESV2", raising=False)


@pytest.fixture
def fake(aws_env: None) -> Iterator[FakeSes]:
    with FakeSes() as server:
        yield server


def client(url: str, api: str = "v1", **kw: object) -> BotoSes:
    return BotoSes(region=REGION, endpoint_url=url, api=api, concurrency=4, **kw)  # type: ignore[arg-type]


@pytest.fixture
def ses(fake: FakeSes) -> Iterator[BotoSes]:
    with client(fake.url) as c:
        yield c


# --- against moto ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_ses(moto_server: str) -> str:
    """moto with example.com verified and configuration set "tx" in REGION."""
    return verified_moto(moto_server)


def test_v1_send_reaches_moto_with_configuration_set_and_tags(moto_ses: str, tmp_path: Path) -> None:
    before = len(sent_messages(REGION))
    with recording(moto_ses, tmp_path / "moto.rec"), client(moto_ses) as ses:
        message_id = ses.send_raw(request(destinations=("carol@example.net",)))
    [stored] = sent_messages(REGION)[before:]
    assert stored.id == message_id  # type: ignore[attr-defined]
    assert stored.source == "alice@example.com"  # type: ignore[attr-defined]
    assert stored.raw_data == RAW.decode()  # type: ignore[attr-defined]  # moto keeps text, not bytes
    # moto appends the raw To/Cc/Bcc addresses to the Destinations it was given
    assert stored.destinations == ["carol@example.net", "Bob <bob@example.org>"]  # type: ignore[attr-defined]
    # ...and keeps neither the configuration set nor the tags: only the recorder saw them
    assert set(vars(stored)) == {"id", "source", "destinations", "raw_data"}
    [sent] = [s for s in recorded_sends(moto_ses) if s.api == "v1"]
    assert sent.configuration_set == "tx"
    assert sent.tags == (("message-class", "transactional"), ("submission-id", "S-1"))
    assert sent.destinations == ("carol@example.net",)
    assert sent.raw == RAW


def test_v1_optional_parameters_are_left_out_when_unset(moto_ses: str, tmp_path: Path) -> None:
    with recording(moto_ses, tmp_path / "moto.rec"), client(moto_ses) as ses:
        ses.send_raw(request(configuration_set=None, tags=()))
    [sent] = recorded_sends(moto_ses)
    assert (sent.configuration_set, sent.tags) == (None, ())


def test_v1_unverified_sender_is_a_permanent_rejection(moto_ses: str) -> None:
    with client(moto_ses) as ses, pytest.raises(SesError) as info:
        ses.send_raw(request(source="mallory@unverified.example", raw=RAW.replace(b"alice@", b"m@")))
    err = info.value
    assert (err.code, err.disposition, err.http_status) == ("MessageRejected", Disposition.PERMANENT, 400)
    assert "mallory@unverified.example" in err.message
    assert err.extra["kind"] == "rejected"
    assert isinstance(err.__cause__, ClientError)


def test_v1_max_send_rate_from_moto(moto_ses: str) -> None:
    with client(moto_ses) as ses:
        assert ses.max_send_rate() == 1.0  # moto's fixed sandbox quota


def test_v2_send_reaches_moto(moto_ses: str, tmp_path: Path) -> None:
    before = len(sent_messages(REGION))
    with recording(moto_ses, tmp_path / "moto.rec"), client(moto_ses, api="v2") as ses:
        message_id = ses.send_raw(request())
    [stored] = sent_messages(REGION)[before:]  # v2 lands in the same list as v1
    assert stored.id == message_id  # type: ignore[attr-defined]
    assert stored.raw_data == RAW.decode()  # type: ignore[attr-defined]
    [sent] = recorded_sends(moto_ses)
    assert sent.api == "v2"
    assert (sent.configuration_set, sent.destinations) == ("tx", ("bob@example.org",))
    assert sent.tags == (("message-class", "transactional"), ("submission-id", "S-1"))
    assert sent.raw == RAW


def test_v2_get_account_is_missing_from_moto(moto_ses: str) -> None:
    """moto 5.2 has no SESv2 GetAccount (404); v2's max_send_rate is tested on FakeSes."""
    with client(moto_ses, api="v2") as ses, pytest.raises(SesError) as info:
        ses.max_send_rate()
    assert info.value.http_status == 404


# --- against FakeSes: what SES receives ---------------------------------------------------


def test_send_raw_passes_every_parameter(fake: FakeSes, ses: BotoSes) -> None:
    arn = "arn:aws:ses:eu-west-2:123456789012:identity/example.com"
    message_id = ses.send_raw(
        request(
            destinations=("bob@example.org", "carol@example.net"),
            source_arn=arn,
            from_arn=arn + "/from",
            return_path_arn=arn + "/rp",
        )
    )
    [call] = fake.calls
    assert call.message_id == message_id
    assert call.raw == RAW
    assert call.source == "alice@example.com"
    assert call.destinations == ("bob@example.org", "carol@example.net")
    assert call.configuration_set == "tx"
    assert call.tags == (("message-class", "transactional"), ("submission-id", "S-1"))
    assert (call.source_arn, call.from_arn, call.return_path_arn) == (arn, arn + "/from", arn + "/rp")


def test_unset_optionals_are_not_sent(fake: FakeSes, ses: BotoSes) -> None:
    ses.send_raw(request(configuration_set=None, tags=()))
    [call] = fake.calls
    assert (call.configuration_set, call.tags, call.source_arn) == (None, (), None)


def test_v2_send_and_quota_through_the_fake(fake: FakeSes) -> None:
    fake.max_send_rate = 42.0
    with client(fake.url, api="v2") as ses:
        ses.send_raw(request(source_arn="arn:aws:ses:eu-west-2:1:identity/example.com"))
        assert ses.max_send_rate() == 42.0
    [call] = fake.calls
    assert (call.api, call.configuration_set, call.source) == ("v2", "tx", "alice@example.com")
    assert call.tags == (("message-class", "transactional"), ("submission-id", "S-1"))
    assert call.source_arn == "arn:aws:ses:eu-west-2:1:identity/example.com"
    assert call.raw == RAW


def test_v2_return_path_arn_travels_as_the_x_ses_header(fake: FakeSes) -> None:
    with client(fake.url, api="v2") as ses:
        ses.send_raw(request(return_path_arn="arn:aws:ses:eu-west-2:1:identity/rp.example"))
    [call] = fake.calls
    assert call.raw == b"X-SES-RETURN-PATH-ARN: arn:aws:ses:eu-west-2:1:identity/rp.example\r\n" + RAW


def test_v1_max_send_rate(fake: FakeSes, ses: BotoSes) -> None:
    fake.max_send_rate = 28.0
    assert ses.max_send_rate() == 28.0


# --- against FakeSes: failures ------------------------------------------------------------


def test_throttling_is_retryable_and_the_next_call_goes_through(fake: FakeSes, ses: BotoSes) -> None:
    fake.fail_next(1, "Throttling", "Maximum sending rate exceeded.", 400)
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    err = info.value
    assert (err.code, err.http_status, err.disposition) == ("Throttling", 400, Disposition.RETRY)
    assert err.message == "Maximum sending rate exceeded."
    assert err.extra["kind"] == "rate"
    assert err.extra["request_id"]
    assert err.retryable
    ses.send_raw(request())
    assert (fake.attempts, len(fake.calls)) == (2, 1)


def test_daily_quota_is_retryable_and_flagged_as_quota(fake: FakeSes, ses: BotoSes) -> None:
    fake.fail_next(1, "Throttling", "Daily message quota exceeded.", 400)
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert info.value.disposition is Disposition.RETRY
    assert info.value.extra["kind"] == "quota"


def test_message_rejected_is_permanent_with_ses_message(fake: FakeSes, ses: BotoSes) -> None:
    fake.fail_next(1, "MessageRejected", "Email address is not verified. <x> & co", 400)
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    err = info.value
    assert (err.code, err.disposition) == ("MessageRejected", Disposition.PERMANENT)
    assert err.message == "Email address is not verified. <x> & co"
    assert str(err) == "MessageRejected (HTTP 400): Email address is not verified. <x> & co"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("code", "status", "disposition"),
    [
        ("InternalFailure", 500, Disposition.RETRY),
        ("ServiceUnavailable", 503, Disposition.RETRY),
        ("SomethingNew", 502, Disposition.RETRY),
        ("ConfigurationSetDoesNotExist", 400, Disposition.PERMANENT),
        ("AccountSendingPausedException", 400, Disposition.RETRY),
        ("SomethingElseNew", 400, Disposition.PERMANENT),
    ],
)
def test_http_errors_over_the_wire(
    fake: FakeSes, ses: BotoSes, code: str, status: int, disposition: Disposition
) -> None:
    fake.fail_next(1, code, "it went wrong", status)
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert (info.value.code, info.value.http_status, info.value.disposition) == (code, status, disposition)
    assert fake.attempts == 1  # botocore did not retry behind our back


def test_v2_errors_over_the_wire(fake: FakeSes) -> None:
    fake.fail_next(1, "TooManyRequestsException", "Too many requests", 429)
    fake.fail_next(1, "MessageRejected", "Illegal address", 400)
    fake.fail_next(1, "NotFoundException", "Configuration set <nope> does not exist.", 404)
    outcomes = []
    with client(fake.url, api="v2") as ses:
        for _ in range(3):
            with pytest.raises(SesError) as info:
                ses.send_raw(request())
            outcomes.append((info.value.code, info.value.http_status, info.value.disposition))
    assert outcomes == [
        ("TooManyRequestsException", 429, Disposition.RETRY),
        ("MessageRejected", 400, Disposition.PERMANENT),
        ("NotFoundException", 404, Disposition.PERMANENT),
    ]
    assert fake.attempts == 3


def test_refused_connection_is_retryable_and_recovers_on_the_same_port(fake: FakeSes, ses: BotoSes) -> None:
    ses.send_raw(request())  # a pooled keep-alive connection now exists
    port = fake.port
    fake.stop_listening()
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert info.value.disposition is Disposition.RETRY
    assert info.value.http_status is None
    assert info.value.extra["kind"] == "network"
    fake.start_listening()
    assert fake.port == port
    ses.send_raw(request())
    assert len(fake.calls) == 2


def test_refused_before_any_connection_is_endpoint_connection_error(fake: FakeSes) -> None:
    fake.stop_listening()
    with client(fake.url) as ses, pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert (info.value.code, info.value.disposition) == ("EndpointConnectionError", Disposition.RETRY)
    assert isinstance(info.value.__cause__, EndpointConnectionError)


def test_dropped_connection_is_retryable(fake: FakeSes, ses: BotoSes) -> None:
    fake.drop_next(1)
    with pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert info.value.disposition is Disposition.RETRY
    assert info.value.code == "ConnectionClosedError"
    ses.send_raw(request())
    assert len(fake.calls) == 1


def test_latency_is_honoured(fake: FakeSes, ses: BotoSes) -> None:
    ses.send_raw(request())  # warm the connection
    fake.latency = 0.3
    started = time.monotonic()
    ses.send_raw(request())
    assert time.monotonic() - started >= 0.3


def test_read_timeout_is_retryable(fake: FakeSes) -> None:
    fake.latency = 10.0  # far beyond the read timeout, so a loaded machine cannot blur the two
    started = time.monotonic()
    with client(fake.url, read_timeout=0.2) as ses, pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert time.monotonic() - started < 5.0
    assert (info.value.code, info.value.disposition) == ("ReadTimeoutError", Disposition.RETRY)


def test_hook_sees_requests_and_can_answer_them(fake: FakeSes, ses: BotoSes) -> None:
    seen: list[FakeRequest] = []

    def hook(req: FakeRequest) -> Failure | Drop | None:
        seen.append(req)
        if req.params.get("Destinations.member.1") == "blocked@example.org":
            return Failure("MessageRejected", "Address blacklisted.", 400)
        return None

    fake.set_hook(hook)
    with pytest.raises(SesError) as info:
        ses.send_raw(request(destinations=("blocked@example.org",)))
    assert info.value.message == "Address blacklisted."
    ses.send_raw(request())
    assert [r.action for r in seen] == ["SendRawEmail", "SendRawEmail"]
    assert [c.destinations for c in fake.calls] == [("bob@example.org",)]


@pytest.mark.solo  # times 16 calls: runs alone (see Makefile)
def test_one_client_serves_concurrent_threads(fake: FakeSes) -> None:
    """max_pool_connections = concurrency: 16 calls of 0.2 s on 8 threads take ~0.4 s, not 3.2 s."""
    fake.latency = 0.2
    with BotoSes(region=REGION, endpoint_url=fake.url, api="v1", concurrency=8) as ses:
        errors, elapsed = send_concurrently(ses)
    assert not errors
    assert len(fake.calls) == 16
    assert elapsed < 1.5, f"16 calls took {elapsed:.2f}s: the connection pool is not being shared"


def test_fake_refuses_oversized_and_garbage(fake: FakeSes, ses: BotoSes) -> None:
    fake.max_raw_size = 100
    with pytest.raises(SesError) as info:
        ses.send_raw(request(raw=RAW + b"x" * 200))
    assert (info.value.code, info.value.disposition) == ("MessageRejected", Disposition.PERMANENT)
    assert fake.wait_for_calls(0, timeout=0.1) == []
    with pytest.raises(TimeoutError):
        fake.wait_for_calls(1, timeout=0.1)


# --- configuration and local failures -------------------------------------------------------


def test_endpoint_falls_back_to_aws_endpoint_url(fake: FakeSes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", fake.url)
    with BotoSes(region=REGION, endpoint_url="", api="v1", concurrency=1) as ses:
        assert ses.endpoint_url == fake.url
        ses.send_raw(request())
    assert len(fake.calls) == 1


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: a call there fails at once


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_the_services_variable_beats_aws_endpoint_url(
    fake: FakeSes, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """botocore's precedence: AWS_ENDPOINT_URL_SES (v1) / _SESV2 (v2) before AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_url())
    mine, other = ("AWS_ENDPOINT_URL_SES", "AWS_ENDPOINT_URL_SESV2")[:: 1 if api == "v1" else -1]
    monkeypatch.setenv(mine, fake.url)
    monkeypatch.setenv(other, dead_url())  # the other API's variable is not ours
    with BotoSes(region=REGION, endpoint_url="", api=api, concurrency=1) as ses:  # type: ignore[arg-type]
        assert ses.endpoint_url == fake.url
        ses.send_raw(request())
    assert [c.api for c in fake.calls] == [api]


def test_the_configured_endpoint_beats_the_environment(
    fake: FakeSes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_url())
    monkeypatch.setenv("AWS_ENDPOINT_URL_SES", dead_url())
    with BotoSes(region=REGION, endpoint_url=fake.url, api="v1", concurrency=1) as ses:
        ses.send_raw(request())
    assert len(fake.calls) == 1


def test_a_dead_endpoint_is_a_retryable_failure(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the tests above: the dead URLs really fail."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_url())
    with BotoSes(region=REGION, endpoint_url="", api="v1", concurrency=1) as ses:
        with pytest.raises(SesError) as info:
            ses.send_raw(request())
    assert info.value.retryable


def test_empty_aws_endpoint_url_means_aws(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    with BotoSes(region="eu-west-2", endpoint_url="", api="v1", concurrency=1) as ses:
        assert ses.endpoint_url == "https://email.eu-west-2.amazonaws.com"


def test_client_is_configured_lean(aws_env: None) -> None:
    with BotoSes(region=REGION, endpoint_url=None, api="v2", concurrency=12) as ses:
        config = ses._client.meta.config
        assert config.max_pool_connections == 12
        assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
        assert (config.connect_timeout, config.read_timeout) == (5.0, 30.0)
        assert ses._client.meta.service_model.service_name == "sesv2"


@pytest.mark.parametrize(("api", "concurrency"), [("v3", 1), ("v1", 0)])
def test_bad_construction_is_refused(aws_env: None, api: str, concurrency: int) -> None:
    with pytest.raises(ValueError):
        BotoSes(region=REGION, endpoint_url=None, api=api, concurrency=concurrency)  # type: ignore[arg-type]


def test_a_request_botocore_cannot_build_is_permanent(fake: FakeSes, ses: BotoSes) -> None:
    with pytest.raises(SesError) as info:
        ses.send_raw(request(configuration_set=123))
    assert (info.value.code, info.value.disposition) == ("ParamValidationError", Disposition.PERMANENT)
    assert fake.attempts == 0


def test_missing_credentials_are_retryable(fake: FakeSes, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    with client(fake.url) as ses, pytest.raises(SesError) as info:
        ses.send_raw(request())
    assert (info.value.code, info.value.disposition) == ("NoCredentialsError", Disposition.RETRY)
    assert info.value.extra["kind"] == "auth"
    assert isinstance(info.value.__cause__, NoCredentialsError)
