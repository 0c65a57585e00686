"""SMTP AUTH against a real `ses-relay serve --sandbox` and real smtplib clients over real TLS.

Every relay these tests start runs at debug level, and each test ends by checking
that the test password (plain, base64, or inside a PLAIN blob) is nowhere in the
relay's output: the logs of the whole run never hold a password.
"""

from __future__ import annotations

import base64
import json
import smtplib
import socket
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Relay, run_cli
from tests.support.relaydb import count_rows
from tests.support.security import (
    PASSWORD,
    WRONG,
    Cert,
    add_user,
    make_cert,
    plain_blob,
    secrets_in,
    tls_client,
)

DEBUG = {"SES_RELAY_LOG_LEVEL": "debug"}


def message(sender: str = "app@example.com", subject: str = "hi", extra: str = "") -> bytes:
    return (
        f"From: App <{sender}>\r\nTo: r@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\n{extra}\r\nHello.\r\n"
    ).encode()


@pytest.fixture
def cert(tmp_path: Path) -> Cert:
    return make_cert(tmp_path / "tls")


@pytest.fixture
def secure_relay(relay_factory: Any, cert: Cert, tmp_path: Path) -> Iterator[Any]:
    """relay_factory with TLS configured, users added first, debug logging, and a log check at the end."""
    started: list[Relay] = []

    def factory(
        extra_config: str = "",
        *,
        users: dict[str, tuple[str, ...]] | None = None,
        user_settings: dict[str, dict[str, Any]] | None = None,
        listener: str = 'tls = "starttls"\n',
        name: str = "data",
    ) -> Relay:
        config_text = cert.toml() + '[auth]\nfailure_delay = "0s"\n' + extra_config
        config_text += "[[listeners]]\n" + listener
        for user, senders in (users or {}).items():
            add_user(tmp_path / name, user, *senders, **(user_settings or {}).get(user, {}))
        relay = relay_factory(config_text, sandbox=True, name=name, env=DEBUG)
        started.append(relay)
        return relay

    yield factory
    for relay in started:
        relay.stop()
        leaked = secrets_in(relay.log())
        assert not leaked, f"the relay's log holds the test password ({leaked})"


def auth_login(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """AUTH LOGIN explicitly (smtplib.login would pick PLAIN, then fall back to LOGIN)."""
    client.user, client.password = user, password
    try:
        return client.auth("LOGIN", client.auth_login)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error


def auth_plain(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    client.user, client.password = user, password
    try:
        return client.auth("PLAIN", client.auth_plain)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error


def test_plain_connection_offers_no_auth_tls_offers_plain_and_login(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(users={"alice": ("app@example.com",)})
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        client.ehlo("client.example.com")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN " + plain_blob("alice", PASSWORD))
        assert (code, text[:7]) == (538, b"5.7.11 ")
    with tls_client(relay, cert) as client:
        assert not client.has_extn("starttls")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}


def test_auth_plain_and_login_succeed_and_wrong_password_gets_535(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(users={"alice": ("app@example.com",)})
    with tls_client(relay, cert) as client:
        assert auth_plain(client, "alice", PASSWORD)[0] == 235
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        assert client.data(message(subject="plain"))[0] == 250
    with tls_client(relay, cert) as client:
        assert auth_login(client, "alice", PASSWORD)[0] == 235
    for mechanism in (auth_plain, auth_login):
        with tls_client(relay, cert) as client:
            code, text = mechanism(client, "alice", WRONG)
            assert (code, text[:6]) == (535, b"5.7.8 ")
            code, text = mechanism(client, "nobody", PASSWORD)
            assert (code, text[:6]) == (535, b"5.7.8 ")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_asks_for_what_the_auth_line_leaves_out_and_answers_aborts_and_bad_base64(
    secure_relay: Any, cert: Cert
) -> None:
    """Both mechanisms take their first response on the AUTH line or after a 334 challenge."""
    relay = secure_relay(users={"alice": ("app@example.com",)})
    with tls_client(relay, cert) as client:  # PLAIN, the blob after an empty challenge
        assert client.docmd("AUTH", "PLAIN") == (334, b"")
        assert client.docmd(plain_blob("alice", PASSWORD))[0] == 235
    with tls_client(relay, cert) as client:  # LOGIN, asked for both
        assert client.docmd("AUTH", "LOGIN") == (334, b64("Username:").encode())
        assert client.docmd(b64("alice")) == (334, b64("Password:").encode())
        assert client.docmd(b64(PASSWORD))[0] == 235
    with tls_client(relay, cert) as client:  # LOGIN, the user on the AUTH line
        assert client.docmd("AUTH", "LOGIN " + b64("alice")) == (334, b64("Password:").encode())
        assert client.docmd(b64(PASSWORD))[0] == 235
    with tls_client(relay, cert) as client:
        for mechanism in ("PLAIN", "LOGIN"):
            code, text = client.docmd("AUTH", mechanism + " not*base64")
            assert (code, text) == (501, b"5.5.2 Cannot decode base64")
            assert client.docmd("AUTH", mechanism)[0] == 334
            assert client.docmd("*")[0] == 501  # the client gave up
        assert client.docmd("AUTH", "LOGIN " + b64("alice"))[0] == 334
        assert client.docmd("*")[0] == 501  # gave up at the password
        code, text = client.docmd("AUTH", "PLAIN " + b64("alice\0" + PASSWORD))
        assert (code, text[:6]) == (501, b"5.5.2 ")
        assert client.noop()[0] == 250  # the session goes on
        assert auth_plain(client, "alice", PASSWORD)[0] == 235


def test_authenticated_mail_carries_user_default_class_and_rate(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(
        users={"alice": ("@example.com",)},
        user_settings={"alice": {"default_class": "bulk", "rate": 3}},
        listener='tls = "starttls"\nrequire_auth = true\n',
    )
    with tls_client(relay, cert) as client:
        code, text = client.mail("app@example.com")
        assert (code, text[:6]) == (530, b"5.7.0 ")  # require_auth: loopback is not enough
        assert auth_plain(client, "alice", PASSWORD)[0] == 235
        assert client.mail("news@example.com")[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        code, reply = client.data(message("news@example.com", "by alice"))
        assert code == 250
        for _ in range(2):  # the rest of alice's 3 a minute
            assert client.mail("news@example.com")[0] == 250
            client.rset()
        code, text = client.mail("news@example.com")
        assert (code, text[:6]) == (450, b"4.7.0 ")
    sid = reply.decode().rsplit(" ", 1)[1]
    shown = relay.json("submission", "show", sid)
    assert (shown["class"], shown["class_source"]) == ("bulk", "user")
    with sqlite3.connect(relay.data_dir / "relay.db") as conn:
        (auth_user,) = conn.execute("SELECT auth_user FROM submissions WHERE id = ?", (sid,)).fetchone()
    assert auth_user == "alice"
    assert relay.wait_log("user alice is over its rate_per_minute")


def test_plaintext_auth_only_for_loopback_when_configured(secure_relay: Any) -> None:
    relay = secure_relay(
        "allow_plaintext_loopback = true\n",
        users={"alice": ("app@example.com",)},
        listener='require_auth = true\n',
    )
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        client.ehlo("local.example")
        assert "PLAIN" in client.esmtp_features["auth"]
        assert auth_login(client, "alice", PASSWORD)[0] == 235
        assert client.mail("app@example.com")[0] == 250


def test_sender_the_user_may_not_use_gets_550_5_7_1(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(users={"alice": ("app@example.com", "@example.net")})
    with tls_client(relay, cert) as client:
        assert auth_plain(client, "alice", PASSWORD)[0] == 235
        code, text = client.mail("ceo@example.org")
        assert (code, text[:6]) == (550, b"5.7.1 ")
        assert b"alice" in text
        # Permitted envelope sender, forbidden From header: refused at DATA.
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        code, text = client.data(message("ceo@example.org", "spoof"))
        assert (code, text[:6]) == (550, b"5.7.1 ")
        # A domain rule: any address at example.net, in both places.
        assert client.mail("billing@example.net")[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        assert client.data(message("billing@example.net", "domain rule"))[0] == 250
        # No From header at all is refused for a restricted user.
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("r@example.org")[0] == 250
        code, text = client.data(b"Subject: no from\r\n\r\nbody\r\n")
        assert (code, text[:6]) == (550, b"5.7.1 ")
    assert count_rows(relay.data_dir, "submissions") == 1


def test_repeated_failures_lock_the_client_out(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay('max_failures = 3\nlockout = "1h"\n', users={"alice": ("app@example.com",)})
    with tls_client(relay, cert) as client:
        for _ in range(3):
            assert auth_plain(client, "alice", WRONG)[0] == 535
        code, text = auth_plain(client, "alice", PASSWORD)
        assert (code, text[:6]) == (454, b"4.7.0 ")
    # A new connection from the same address is still locked out, even with the right password.
    with tls_client(relay, cert) as client:
        code, text = auth_login(client, "alice", PASSWORD)
        assert (code, text[:6]) == (454, b"4.7.0 ")
    assert relay.wait_log("locking 127.0.0.1 out of AUTH")


def test_client_outside_allow_list_of_auth_listener_gets_530_at_mail(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(
        users={"alice": ("app@example.com",)},
        listener='tls = "starttls"\nrequire_auth = true\nallow_networks = ["127.0.0.1/32"]\n',
    )
    try:
        client = tls_client(relay, cert, source="127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not usable as a source address here")
    with client:
        code, text = client.mail("app@example.com")
        assert (code, text) == (530, b"5.7.0 Authentication required")
        # The same client, authenticated, may send.
        assert auth_login(client, "alice", PASSWORD)[0] == 235
        assert client.mail("app@example.com")[0] == 250
    assert relay.wait_log("refused MAIL from 127.0.0.2")


def test_implicit_tls_listener_offers_auth_from_the_first_command(secure_relay: Any, cert: Cert) -> None:
    relay = secure_relay(
        users={"alice": ("app@example.com",)}, listener='tls = "implicit"\nrequire_auth = true\n'
    )
    with smtplib.SMTP_SSL("127.0.0.1", relay.port, timeout=30, context=cert.client_context()) as client:
        client.ehlo("client.example.com")
        assert not client.has_extn("starttls")
        assert "PLAIN" in client.esmtp_features["auth"]
        assert auth_plain(client, "alice", PASSWORD)[0] == 235
        assert client.mail("app@example.com")[0] == 250
    # A client that does not speak TLS first gets nowhere.
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as raw:
        raw.sendall(b"EHLO plain.example\r\n")
        raw.settimeout(5)
        try:
            got = raw.recv(100)
        except (ConnectionResetError, TimeoutError):
            got = b""
        assert not got.startswith(b"250")


def test_auth_exchanges_never_reach_the_debug_log(secure_relay: Any, cert: Cert) -> None:
    """Every way a client may send a password, at --log-level debug; the fixture greps the log."""
    relay = secure_relay(users={"alice": ("app@example.com",)})
    blob = plain_blob("alice", PASSWORD)
    with tls_client(relay, cert) as client:
        client.docmd("AUTH", "PLAIN")  # 334: the blob as a challenge response
        assert client.docmd(blob)[0] == 235
    with tls_client(relay, cert) as client:
        assert auth_login(client, "alice", PASSWORD)[0] == 235
    with tls_client(relay, cert) as client:
        assert auth_plain(client, "alice", PASSWORD + "x")[0] == 535
    # Credentials sent on a plain connection and where no command is expected.
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        client.ehlo("client.example.com")
        assert client.docmd("AUTH", f"PLAIN {blob}")[0] == 538
        client.docmd(blob)
        client.docmd(base64.b64encode(PASSWORD.encode()).decode())
        client.docmd(PASSWORD)
    relay.wait_log("login ok: user 'alice'")
    relay.wait_log("login failed for 'alice'")
    log = relay.log()
    assert "DEBUG" in log


def cli(*args: str, data_dir: Path, config: Path | None = None, input: str | None = None) -> Any:
    """The real CLI in-process (click's CliRunner): these commands need no server process."""
    from click.testing import CliRunner

    from cli import main

    extra = ["--data-dir", str(data_dir)] + (["--config", str(config)] if config else [])
    return CliRunner().invoke(main, [*args, *extra], input=input, catch_exceptions=False)


def test_user_commands_manage_the_users_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cli("user", "add", "bob", "--password-stdin", data_dir=data, input=PASSWORD + "\n")
    assert result.exit_code == 2 and "--sender" in result.output
    # Prompted twice (hidden); a mismatch is asked again.
    result = cli(
        "user", "add", "bob", "--sender", "Bob@Example.COM", "--sender", "@example.net",
        "--default-class", "list", "--rate", "30", data_dir=data,
        input=f"{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    users_file = data / "users.json"
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    text = users_file.read_text()
    assert PASSWORD not in text and "scrypt$" in text
    from relay.intake.users import load_users, verify_password

    assert verify_password(PASSWORD.encode(), load_users(users_file).users["bob"].password_hash)
    listed = json.loads(cli("user", "list", "--json", data_dir=data).output)
    assert listed == [
        {
            "name": "bob",
            "senders": ["bob@example.com", "@example.net"],
            "default_class": "list",
            "rate_per_minute": 30,
            "may_set_arns": False,
        }
    ]
    again = cli("user", "add", "bob", "--password-stdin", "--sender", "*", data_dir=data, input="x\n")
    assert again.exit_code == 1 and "already exists" in again.output
    bad_class = cli(
        "user", "add", "eve", "--password-stdin", "--sender", "*", "--default-class", "nope",
        data_dir=data, input="x\n",
    )  # fmt: skip
    assert bad_class.exit_code == 2 and "nope" in bad_class.output
    bad_sender = cli("user", "add", "eve", "--password-stdin", "--sender", "x", data_dir=data, input="x\n")
    assert bad_sender.exit_code == 2 and "sender rule" in bad_sender.output
    empty = cli("user", "add", "eve", "--password-stdin", "--sender", "*", data_dir=data, input="\n")
    assert empty.exit_code == 2 and "empty" in empty.output
    assert cli("user", "remove", "bob", data_dir=data).exit_code == 0
    assert cli("user", "remove", "bob", data_dir=data).exit_code == 1
    assert cli("user", "list", data_dir=data).output.strip() == "no users"


def test_a_corrupt_users_file_stops_serve_with_status_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.json").write_text('{"users": {"x": {"password": "plaintext!"}}}')
    result = run_cli("serve", "--sandbox", data_dir=data)
    assert result.returncode == 2
    assert "auth.users_file" in result.stderr and "scrypt" in result.stderr


def test_users_added_while_running_can_log_in(secure_relay: Any, cert: Cert, tmp_path: Path) -> None:
    relay = secure_relay()
    with tls_client(relay, cert) as client:
        assert not client.has_extn("auth")  # no users yet: AUTH is not offered
    result = cli(
        "user", "add", "late", "--password-stdin", "--sender", "*",
        data_dir=relay.data_dir, config=relay.config, input=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with tls_client(relay, cert) as client:
        assert client.has_extn("auth")
        assert auth_plain(client, "late", PASSWORD)[0] == 235
    assert cli("user", "remove", "late", data_dir=relay.data_dir, config=relay.config).exit_code == 0
    with tls_client(relay, cert) as client:
        assert auth_plain(client, "late", PASSWORD)[0] == 535
