"""The pure rules behind the intake's hardening, table-tested: open-relay refusals, TLS/AUTH
configuration checks, failure lockout, rate and connection limits, users, sender rules,
header checks and log redaction.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from relay import headers as hdr
from relay.config import ConfigError, from_dict
from relay.intake import inputcheck
from relay.intake.auth import FailureTracker
from relay.intake.limits import ConnectionCounter, RateLimiter
from relay.intake.users import (
    UsersFileError,
    hash_password,
    normalise_sender_rule,
    parse_users,
    sender_permitted,
    verify_password,
)
from relay.logredact import RedactSecrets, redact
from relay.networks import wide_network


@pytest.mark.parametrize(
    ("listener", "needle"),
    [
        ({"allow_networks": ["0.0.0.0/0"]}, "0.0.0.0/0 is every address"),
        ({}, "neither require_auth = true nor an explicit allow_networks"),
        ({"allow_networks": ["127.0.0.0/8", "8.0.0.0/8"]}, "8.0.0.0/8 is a public network wider than /16"),
        ({"allow_networks": ["::/0"]}, "::/0 is every address"),
    ],
)
def test_open_relay_refusals_say_why(listener: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({"listeners": [{"listen": "0.0.0.0:25", **listener}]})
    assert info.value.key == "listeners[0].allow_networks"
    assert "open relay" in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"listeners": [{"tls": "starttls"}]}, "tls.cert_file"),
        ({"listeners": [{"tls": "implicit"}], "tls": {"cert_file": "c.pem"}}, "tls.key_file"),
        ({"listeners": [{"require_auth": True}]}, "listeners[0].tls"),
        ({"limits": {"connections_per_ip": 0}}, "limits.connections_per_ip"),
        ({"limits": {"command_timeout": "0s"}}, "limits.command_timeout"),
        ({"limits": {"line_length": 80}}, "limits.line_length"),
        ({"limits": {"bare_line_endings": "keep"}}, "limits.bare_line_endings"),
        ({"auth": {"lockout": "soon"}}, "auth.lockout"),
        ({"tls": {"min_version": "1.1"}}, "tls.min_version"),
    ],
)
def test_tls_auth_and_limit_misconfiguration_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert info.value.key == key


def test_plaintext_auth_on_a_loopback_listener_needs_the_flag() -> None:
    listener = {"listen": "127.0.0.1:2525", "require_auth": True}
    with pytest.raises(ConfigError):
        from_dict({"listeners": [listener]})
    from_dict({"listeners": [listener], "auth": {"allow_plaintext_loopback": True}})


# -- the pure rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "ok"),
    [
        ({"listen": "0.0.0.0:25", "allow_networks": ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]}, True),
        ({"listen": "0.0.0.0:25", "allow_networks": ["203.0.113.0/24", "2001:db8::/48"]}, True),
        ({"listen": "0.0.0.0:25", "allow_networks": []}, True),  # nobody may relay: useless, not open
        ({"listen": "0.0.0.0:25", "allow_networks": ["198.51.0.0/15"]}, False),
        ({"listen": "0.0.0.0:25", "allow_networks": ["2001:db8::/32"]}, False),
        ({"listen": "[::]:25", "allow_networks": ["0.0.0.0/1", "128.0.0.0/1"]}, False),
        ({"listen": "192.0.2.10:25"}, False),
        ({"listen": "127.0.0.1:25", "allow_networks": ["0.0.0.0/0"]}, True),  # loopback-bound
        ({"listen": "localhost:25", "allow_networks": ["0.0.0.0/0"]}, True),
        ({"listen": "0.0.0.0:587", "require_auth": True, "tls": "starttls", "allow_networks": ["0.0.0.0/0"]},
         True),
    ],
)  # fmt: skip
def test_open_relay_rule(listener: dict[str, Any], ok: bool) -> None:
    data: dict[str, Any] = {"listeners": [listener], "tls": {"cert_file": "c.pem", "key_file": "k.pem"}}
    if ok:
        from_dict(data)
    else:
        with pytest.raises(ConfigError, match="open relay") as info:
            from_dict(data)
        assert info.value.key == "listeners[0].allow_networks"


def test_wide_network_never_calls_everything_private() -> None:
    assert wide_network("0.0.0.0/0") and wide_network("::/0")
    assert wide_network("10.0.0.0/7")  # reaches past 10/8 into public space
    assert wide_network("127.0.0.0/8") is None and wide_network("100.64.0.0/10") is None


def test_failure_tracker_locks_after_max_and_unlocks_after_lockout() -> None:
    now = [1000.0]
    tracker = FailureTracker(max_failures=3, window=60, lockout=300, clock=lambda: now[0])
    assert [tracker.record_failure("ip") for _ in range(2)] == [1, 2]
    assert tracker.locked_until("ip") is None
    now[0] += 61  # the first two age out of the window
    assert tracker.record_failure("ip") == 1
    tracker.record_failure("ip")
    tracker.record_failure("ip")
    assert tracker.locked_until("ip") == now[0] + 300
    assert tracker.locked_until("other") is None
    now[0] += 300
    assert tracker.locked_until("ip") is None


def test_rate_limiter_refills_smoothly_and_zero_means_no_limit() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a")] == [True, True, False]
    assert limiter.allow("b")  # keys are independent
    now[0] += 30  # half a minute: one message's worth
    assert limiter.allow("a") and not limiter.allow("a")
    assert all(limiter.allow("u", per_minute=0) for _ in range(1000))


def test_connection_counter() -> None:
    counter = ConnectionCounter(2)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    counter.release("a")
    assert counter.acquire("a") and counter.count("a") == 2
    counter.release("a")
    counter.release("a")
    assert counter.count("a") == 0


def test_password_hashes_and_users_file_validation() -> None:
    stored = hash_password("s3cret-pass", n=2**10)
    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password(b"s3cret-pass", stored) and not verify_password(b"s3cret-pasS", stored)
    assert hash_password("s3cret-pass", n=2**10) != stored  # salted
    ok = parse_users(
        f'{{"version": 1, "users": {{"a": {{"password": "{stored}", "senders": ["@Example.COM"]}}}}}}'
    )
    assert ok.users["a"].senders == ("@example.com",)
    for bad, why in [
        ('{"users": {"a": {"password": "hunter2"}}}', "scrypt"),
        (f'{{"users": {{"a": {{"password": "{stored}", "rate_per_minute": -1}}}}}}', "rate_per_minute"),
        (f'{{"users": {{"a": {{"password": "{stored}", "senderz": []}}}}}}', "senderz"),
        (f'{{"users": {{"a b": {{"password": "{stored}"}}}}}}', "user name"),
        ('{"users": {"a": {"password": "scrypt$1048576$32$1$AAAA$AAAA"}}}', "out-of-range"),
        ('{"version": 2, "users": {}}', "version"),
        ("not json", "JSON"),
    ]:
        with pytest.raises(UsersFileError, match=why):
            parse_users(bad)
    with pytest.raises(UsersFileError, match="default_class"):
        parse_users(
            f'{{"users": {{"a": {{"password": "{stored}", "default_class": "nope"}}}}}}', {"transactional": 1}
        )


@pytest.mark.parametrize(
    ("rules", "address", "allowed"),
    [
        (("app@example.com",), "app@example.com", True),
        (("app@example.com",), "other@example.com", False),
        (("@example.com",), "anyone@example.com", True),
        (("@example.com",), "anyone@sub.example.com", False),
        (("@example.com",), "anyone@example.com.evil.net", False),
        (("*",), "anyone@anywhere.example", True),
        ((), "app@example.com", False),
    ],
)
def test_sender_rules(rules: tuple[str, ...], address: str, allowed: bool) -> None:
    assert sender_permitted(tuple(normalise_sender_rule(r) for r in rules), address) is allowed


def test_header_checks_and_line_ending_normalisation() -> None:
    good = b"From: a@example.com\r\nSubject: x\r\n folded\r\n\r\nbody\nbare\r\n"
    assert inputcheck.header_problem(hdr.Headers.of(good)) is None
    assert inputcheck.header_problem(hdr.Headers.of(b"From: a@example.com\nSubject: x\r\n\r\n"))
    assert inputcheck.normalise_line_endings(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"
    assert not inputcheck.has_bare_line_endings(b"a\r\nb\r\n")
    data = b"From: a@example.com\r\nX-SES-FROM-ARN: x\r\nSubject: s\r\n\r\nX-SES-FROM-ARN: in body\r\n"
    stripped = inputcheck.strip_arn_headers(data)
    assert stripped == b"From: a@example.com\r\nSubject: s\r\n\r\nX-SES-FROM-ARN: in body\r\n"


def test_log_redaction_of_auth_lines_aws_secrets_and_stray_client_lines(monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    flt = RedactSecrets(["extra-secret-value"])

    def render(name: str, msg: str, *args: Any) -> str:
        record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
        assert flt.filter(record)
        return record.getMessage()

    assert "dXNlcg" not in render("mail.log", "%r >> %r", ("127.0.0.1", 1), b"dXNlcgBwYXNzd29yZA==")
    assert render("mail.log", "%r >> %r", ("127.0.0.1", 1), b"MAIL FROM:<a@example.com>").endswith(
        "b'MAIL FROM:<a@example.com>'"
    )
    assert "hunter2" not in render("mail.log", "%r can't decode base64: %s", ("127.0.0.1", 1), b"hunter2")
    assert render("mail.log", "DATA readline: %s", b"Subject: secret plans\r\n") == "DATA line of 23 octets"
    assert "EXAMPLEKEY" not in render("botocore", "creds %s", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert "extra-secret-value" not in render("x", "got extra-secret-value")
    assert redact("AUTH LOGIN dXNlcg==") == "AUTH LOGIN ********"
    assert redact("X-Amz-Security-Token: IQoJb3JpZ2luX2VjE") == "X-Amz-Security-Token: ********"
    # botocore's debug form of request headers: a dict of bytes values.
    assert "IQoJb3" not in redact("headers={'X-Amz-Security-Token': b'IQoJb3JpZ2luX2VjE', 'X': b'1'}")
    assert redact("lmtp via smtp://u:pw123456@mx.example:25") == "lmtp via smtp://u:********@mx.example:25"
