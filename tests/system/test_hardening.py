"""Bad input, limits and exposure rules against a real relay.

The pure rules behind them are table-tested in tests/unit/test_hardening.py.
"""

from __future__ import annotations

import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError
from relay.intake import inputcheck
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
