"""Bad input, limits and exposure rules against a real relay; the pure rules table-tested beside them."""

from __future__ import annotations

import logging
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

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
from tests.conftest import Relay, free_port, run_cli, wait_until
from tests.support.relaydb import count_rows
from tests.support.security import make_cert
from tests.support.smtp import Conversation, envelope


def stored_headers(relay: Relay) -> list[str]:
    with sqlite3.connect(relay.data_dir / "relay.db") as db:
        return [row[0] for row in db.execute("SELECT headers FROM submissions ORDER BY created_at")]


# -- SMTP smuggling --------------------------------------------------------------------


def test_smuggling_attempt_yields_exactly_one_message(relay_factory: Any) -> None:
    """`\\n.\\r\\n` (and bare-CR / bare-LF variants) inside DATA, then a second MAIL FROM: one message."""
    relay = relay_factory(sandbox=True)
    attempts = {"lf": b"\n.\r\n", "cr": b"\r.\r\n", "lf-lf": b"\n.\n"}
    for label, fake_end in attempts.items():
        with Conversation(relay) as conv:
            envelope(conv, [f"victim-{label}@example.org"])
            conv.send(
                b"From: App <app@example.com>\r\nSubject: smuggle\r\n\r\nFirst part" + fake_end
                + b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<smuggled@example.org>\r\n"
                b"DATA\r\nFrom: ceo@example.com\r\nSubject: smuggled\r\n\r\nNO SMUGGLING\r\n.\r\n"
            )  # fmt: skip
            first = conv.reply()
            assert first.startswith(b"250 2.0.0 Ok: queued as "), (label, first)
            assert conv.cmd(b"QUIT").startswith(b"221")  # the "second" MAIL FROM was never a command
    assert count_rows(relay.data_dir, "submissions") == len(attempts)
    for label in attempts:
        path = relay.data_dir / "sandbox" / f"victim-{label}@example.org" / "new"
        copies = wait_until(lambda p=path: list(p.glob("*")) if p.exists() else [], what=f"{label} copy")
        body = copies[0].read_bytes()
        assert b"NO SMUGGLING" in body and b"MAIL FROM:<ceo@example.com>" in body
        assert not inputcheck.has_bare_line_endings(body)  # normalised before it went anywhere
    assert not (relay.data_dir / "sandbox" / "smuggled@example.org").exists()
    assert relay.wait_log("(bare line endings normalised)", len(attempts))


def test_bare_line_endings_can_be_refused_instead(relay_factory: Any) -> None:
    relay = relay_factory('[limits]\nbare_line_endings = "reject"\n', sandbox=True)
    with Conversation(relay) as conv:
        envelope(conv, ["r@example.org"])
        conv.send(b"From: app@example.com\r\nSubject: x\r\n\r\nline\n.\r\nMAIL FROM:<x@example.com>\r\n.\r\n")
        assert conv.reply().startswith(b"550 5.6.0 ")
        envelope(conv, ["r@example.org"])
        conv.send(b"From: app@example.com\r\nSubject: hi\nBcc: victim@example.org\r\n\r\nbody\r\n.\r\n")
        assert conv.reply().startswith(b"550 5.6.0 ")
    assert count_rows(relay.data_dir, "submissions") == 0


# -- addresses, header values, SMTPUTF8 ----------------------------------------------------------


def test_smtputf8_8bit_and_control_characters_are_refused_cleanly(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    with Conversation(relay) as conv:
        ehlo = conv.cmd(b"EHLO client.example.com")
        assert b"SMTPUTF8" not in ehlo
        assert conv.cmd(b"MAIL FROM:<app@example.com> SMTPUTF8").startswith(b"555 5.6.7 ")
        assert conv.cmd("MAIL FROM:<jos\u00e9@example.com>".encode()).startswith(b"553 5.6.7 ")
        assert conv.cmd(b"MAIL FROM:<app\r@example.com>")[:3] in (b"501", b"553")
        assert conv.cmd(b"MAIL FROM:<app@example.com>").startswith(b"250")
        assert conv.cmd("RCPT TO:<r\u00e9@example.org>".encode("latin-1")).startswith(b"553 5.6.7 ")
        assert conv.cmd(b"RCPT TO:<r\x01@example.org>")[:3] in (b"501", b"553")
        assert conv.cmd(b"RCPT TO:<r@example.org>").startswith(b"250")
        assert conv.cmd(b"NOOP").startswith(b"250")  # the session survived all of it
    assert count_rows(relay.data_dir, "submissions") == 0


def test_cr_lf_or_nul_in_header_values_is_refused(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    bad_headers = [  # (a bare LF ends a header line from a trusted client: tests/system/test_line_endings.py)
        b"Subject: hi\rBcc: victim@example.org\r\n",  # bare CR inside the header section
        b"Subject: =?utf-8?q?hi=0D=0ABcc:_victim@example.org?=\r\n",  # CR LF hidden in an encoded word
        b"Subject: hi\x00there\r\n",
    ]
    with Conversation(relay) as conv:
        for headers in bad_headers:
            envelope(conv, ["r@example.org"])
            conv.send(b"From: app@example.com\r\n" + headers + b"\r\nbody\r\n.\r\n")
            reply = conv.reply()
            assert reply.startswith(b"550 5.6.0 "), (headers, reply)
    assert count_rows(relay.data_dir, "submissions") == 0
    assert relay.wait_log("refused DATA from 127.0.0.1", len(bad_headers))


def test_arn_headers_from_clients_are_dropped_before_storage(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    with Conversation(relay) as conv:
        envelope(conv, ["r@example.org"])
        conv.send(
            b"From: app@example.com\r\nSubject: arn\r\n"
            b"X-SES-SOURCE-ARN: arn:aws:ses:us-east-1:999999999999:identity/evil.example\r\n"
            b"X-SES-FROM-ARN: arn:aws:ses:us-east-1:999999999999:identity/evil.example\r\n"
            b"x-ses-return-path-arn: arn:aws:ses:us-east-1:999999999999:identity/evil.example\r\n"
            b"\r\nbody\r\n.\r\n"
        )
        assert conv.reply().startswith(b"250")
    (headers,) = stored_headers(relay)
    assert "999999999999" not in headers and "Subject: arn" in headers
    assert relay.wait_log("removed X-SES-*-ARN headers")


# -- limits ------------------------------------------------------------------------------------


def test_connections_per_ip_over_the_limit_get_421(relay_factory: Any) -> None:
    """127.0.0.2 is outside allow_networks here, so it is counted (tests/system/test_intake_clients.py:
    clients inside allow_networks are not)."""
    untrusted = "127.0.0.2"
    config = '[limits]\nconnections_per_ip = 2\n[[listeners]]\nallow_networks = ["127.0.0.1/32"]\n'
    relay = relay_factory(config, sandbox=True)
    first, second = Conversation(relay, source=untrusted), Conversation(relay, source=untrusted)
    try:
        assert first.greeting.startswith(b"220") and second.greeting.startswith(b"220")
        with Conversation(relay, source=untrusted) as third:
            assert third.greeting.startswith(b"421 4.7.0 "), third.greeting
        first.cmd(b"QUIT")
        first.close()

        def admitted() -> bool:
            with Conversation(relay, source=untrusted) as conv:
                return conv.greeting.startswith(b"220")

        wait_until(admitted, what="a slot to free up after QUIT")
    finally:
        first.close()
        second.close()
    assert relay.wait_log("limits.connections_per_ip")


def test_messages_per_minute_per_ip_answers_450(relay_factory: Any) -> None:
    relay = relay_factory("[limits]\nmessages_per_minute_per_ip = 2\n", sandbox=True)
    with Conversation(relay) as conv:
        conv.cmd(b"EHLO client.example.com")
        for _ in range(2):
            assert conv.cmd(b"MAIL FROM:<app@example.com>").startswith(b"250")
            conv.cmd(b"RSET")
        assert conv.cmd(b"MAIL FROM:<app@example.com>").startswith(b"450 4.7.0 ")
    assert relay.wait_log("messages_per_minute_per_ip")


def test_idle_connection_is_closed_with_421(relay_factory: Any) -> None:
    relay = relay_factory('[limits]\ncommand_timeout = "1s"\n', sandbox=True)
    with Conversation(relay) as idle:
        started = time.monotonic()
        reply = idle.reply()
        assert reply.startswith(b"421 4.4.2 ") and b"no command" in reply, reply
        assert idle.sock.recv(10) == b""  # closed
        assert time.monotonic() - started < 8
    assert relay.wait_log("limits.command_timeout")


def test_slow_data_transfer_is_closed_with_421(relay_factory: Any) -> None:
    # A generous command timeout so that only the DATA transfer can time out, however loaded the host.
    relay = relay_factory('[limits]\ncommand_timeout = "60s"\ndata_timeout = "1s"\n', sandbox=True)
    with Conversation(relay) as slow:
        envelope(slow, ["r@example.org"])
        slow.send(b"Subject: slow\r\n")  # and then nothing more
        reply = slow.reply()
        assert reply.startswith(b"421 4.4.2 ") and b"DATA" in reply, reply
    assert relay.wait_log("limits.data_timeout")
    assert count_rows(relay.data_dir, "submissions") == 0


def test_line_length_limit_and_command_length(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    with Conversation(relay) as conv:
        assert conv.cmd(b"EHLO " + b"a" * 600).startswith(b"500 5.5.2 ")
        envelope(conv, ["r@example.org"])
        conv.send(b"From: app@example.com\r\nSubject: long\r\n\r\n" + b"x" * 1200 + b"\r\n.\r\n")
        reply = conv.reply()
        assert reply.startswith(b"500 5.5.2 Line too long"), reply
    assert count_rows(relay.data_dir, "submissions") == 0
    assert relay.wait_log("Line too long")


def test_a_longer_line_length_can_be_configured(relay_factory: Any) -> None:
    relay = relay_factory("[limits]\nline_length = 4096\n", sandbox=True)
    with Conversation(relay) as conv:
        envelope(conv, ["r@example.org"])
        conv.send(b"From: app@example.com\r\nSubject: long\r\n\r\n" + b"x" * 3000 + b"\r\n.\r\n")
        assert conv.reply().startswith(b"250")


# -- exposure: the open-relay rule and TLS configuration ---------------------------------------------


def test_listener_on_every_interface_without_auth_or_narrow_allow_list_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text(f'[[listeners]]\nlisten = "0.0.0.0:{free_port()}"\nallow_networks = ["0.0.0.0/0"]\n')
    data = tmp_path / "data"
    result = run_cli("serve", "--sandbox", data_dir=data, config=config)
    assert result.returncode == 2
    assert "would be an open relay" in result.stderr
    assert "listeners[0].allow_networks" in result.stderr and "0.0.0.0/0 is every address" in result.stderr
    assert not (data / "relay.db").exists()
    # --listen is checked after it replaces the address: the same list is fine on loopback only.
    config.write_text('[[listeners]]\nallow_networks = ["0.0.0.0/0"]\n')
    result = run_cli("serve", "--sandbox", "--listen", f"0.0.0.0:{free_port()}", data_dir=data, config=config)
    assert result.returncode == 2 and "open relay" in result.stderr


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


def test_unreadable_or_mismatched_tls_files_exit_2_naming_the_key(tmp_path: Path) -> None:
    from relay.config import TlsConfig
    from relay.intake.tls import server_context

    one, two = make_cert(tmp_path / "one"), make_cert(tmp_path / "two")
    ctx = server_context(TlsConfig(cert_file=str(one.cert), key_file=str(one.key)))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    for cert, key, expected in [
        (tmp_path / "missing.pem", one.key, "tls.cert_file"),
        (one.cert, tmp_path / "missing.pem", "tls.key_file"),
        (one.cert, two.key, "tls.cert_file"),
    ]:
        with pytest.raises(ConfigError) as info:
            server_context(TlsConfig(cert_file=str(cert), key_file=str(key)))
        assert info.value.key == expected
    config = tmp_path / "c.toml"
    config.write_text(
        f'[tls]\ncert_file = "{one.cert}"\nkey_file = "{two.key}"\n[[listeners]]\ntls = "starttls"\n'
    )
    result = run_cli("serve", "--sandbox", data_dir=tmp_path / "data", config=config)
    assert result.returncode == 2 and "tls.cert_file" in result.stderr


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
    assert inputcheck.header_problem(good) is None
    assert inputcheck.header_problem(b"From: a@example.com\nSubject: x\r\n\r\n")
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
