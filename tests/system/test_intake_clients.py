"""What mail clients and connection pools expect of the intake: ESMTP extensions, many connections.

A real `ses-relay serve --sandbox`; smtplib for what a library sees, a raw socket
for the byte-level pipelining exchange.
"""

from __future__ import annotations

import re
import smtplib
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Relay
from tests.support.relaydb import count_rows
from tests.support.security import make_cert
from tests.support.smtp import Conversation

ENHANCED = re.compile(rb"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} ")
MESSAGE = b"From: App <app@example.com>\r\nSubject: %s\r\n\r\nHello.\r\n"


# -- EHLO: PIPELINING and ENHANCEDSTATUSCODES ------------------------------------------------------


def test_ehlo_advertises_pipelining_and_enhanced_status_codes(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        code, _ = client.ehlo("client.example.com")
        assert code == 250
        assert client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")
        assert client.has_extn("size") and client.has_extn("8bitmime")
        assert not client.has_extn("auth")  # no users: nothing to authenticate as


def test_every_reply_after_ehlo_carries_an_enhanced_code(relay_factory: Any) -> None:
    """ENHANCEDSTATUSCODES is a promise about every reply (RFC 2034), aiosmtpd's own ones too."""
    relay = relay_factory(sandbox=True)
    commands = [
        b"NOOP",
        b"RSET",
        b"HELP",
        b"VRFY someone@example.org",
        b"EXPN list",
        b"FROB",  # unknown command
        b"DATA",  # no recipients yet
        b"RCPT TO:<r@example.org>",  # no MAIL yet
        b"MAIL FROM:<app@example.com> FROB=1",  # unknown parameter
        b"MAIL FROM:<app@example.com>",
        b"MAIL FROM:<app@example.com>",  # nested
        b"RCPT TO:<not an address>",
        b"RCPT TO:<r@example.org>",
        b"DATA now",  # DATA takes no argument
        b"STARTTLS",  # not configured
        b"QUIT",
    ]
    with Conversation(relay) as conv:
        assert conv.greeting.startswith(b"220 ")
        assert conv.cmd(b"EHLO client.example.com").startswith(b"250-")
        for command in commands:
            reply = conv.cmd(command)
            assert ENHANCED.match(reply), (command, reply)


def test_a_pipelined_exchange_on_a_raw_socket(relay_factory: Any) -> None:
    """RFC 2920: the envelope in one write, the replies in order; then RSET, NOOP, QUIT in one write."""
    relay = relay_factory(sandbox=True)
    with Conversation(relay) as conv:
        conv.cmd(b"EHLO client.example.com")
        conv.send(
            b"MAIL FROM:<app@example.com>\r\nRCPT TO:<one@example.org>\r\nRCPT TO:<not an address>\r\n"
            b"RCPT TO:<two@example.org>\r\nDATA\r\n"
        )
        replies = [conv.reply() for _ in range(5)]
        expected = [b"250 2.1.0", b"250 2.1.5", b"501 5.1.3", b"250 2.1.5", b"354 End d"]
        assert [r[:9] for r in replies] == expected
        conv.send(MESSAGE % b"pipelined" + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        replies = [conv.reply() for _ in range(4)]
        assert replies[0].startswith(b"250 2.0.0 Ok: queued as "), replies
        assert [r[:9] for r in replies[1:]] == [b"250 2.0.0", b"250 2.0.0", b"221 2.0.0"]
    sid = replies[0].rsplit(b" ", 1)[1].decode()
    shown = relay.json("submission", "show", sid)
    assert [r["address"] for r in shown["recipients"]] == ["one@example.org", "two@example.org"]


def test_pipelined_plaintext_after_starttls_is_discarded(relay_factory: Any, tmp_path: Path) -> None:
    """A command injected after STARTTLS in the same write (RFC 3207 5, CVE-2011-0411) must not
    run inside the TLS session: PIPELINING is advertised, so this stays tested."""
    cert = make_cert(tmp_path / "tls")
    relay = relay_factory(cert.toml() + '[[listeners]]\ntls = "starttls"\n', sandbox=True)
    with Conversation(relay) as conv:
        assert b"250-STARTTLS" in conv.cmd(b"EHLO client.example.com")
        conv.send(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        assert conv.reply().startswith(b"220 2.0.0 ")
        assert conv.buffer == b""
        tls = cert.client_context().wrap_socket(conv.sock, server_hostname="localhost")
        tls.settimeout(10)
        tls.sendall(b"EHLO client.example.com\r\n")  # the first reply inside TLS answers this
        reply = b""
        while not re.search(rb"(^|\r\n)250 [^\r\n]*\r\n$", reply):
            chunk = tls.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"250-") and b"injected" not in reply
        tls.sendall(b"MAIL FROM:<app@example.com>\r\n")  # not "nested MAIL": nothing was injected
        assert tls.recv(4096).startswith(b"250 2.1.0 ")
        tls.close()


# -- connection pools: allow_networks is not counted per address --------------------------------


def open_clients(relay: Relay, count: int, source: str | None = None) -> list[smtplib.SMTP]:
    clients: list[smtplib.SMTP] = []
    for _ in range(count):
        client = smtplib.SMTP(timeout=30, source_address=(source, 0) if source else None)
        clients.append(client)
        code, banner = client.connect("127.0.0.1", relay.port)
        assert code == 220, (len(clients), code, banner)
    return clients


def test_fifty_concurrent_connections_from_allow_networks_are_all_served(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)  # the default config: connections_per_ip = 20
    clients = open_clients(relay, 50)  # all 50 open at once, each greeted with 220
    try:

        def send(index: int) -> int:
            client = clients[index]
            client.ehlo("pool.example.com")
            client.sendmail("app@example.com", [f"pool{index}@example.org"], MESSAGE % b"pool %d" % index)
            return index

        with ThreadPoolExecutor(max_workers=10) as pool:
            assert sorted(pool.map(send, range(50), timeout=120)) == list(range(50))
    finally:
        for client in clients:
            client.close()
    assert count_rows(relay.data_dir, "submissions") == 50
    assert "Too many connections" not in relay.log() and "limits.connections_per_ip" not in relay.log()


def test_clients_outside_allow_networks_keep_the_per_address_limit(relay_factory: Any) -> None:
    """127.0.0.2 must AUTH here (it is outside allow_networks): 20 connections, then 421.
    127.0.0.1, inside, is not held back by them or by its own count."""
    relay = relay_factory('[[listeners]]\nallow_networks = ["127.0.0.1/32"]\n', sandbox=True)
    try:
        socket.create_connection(("127.0.0.1", relay.port), source_address=("127.0.0.2", 0)).close()
    except OSError:
        pytest.skip("127.0.0.2 is not usable as a source address here")
    outsiders = open_clients(relay, 20, source="127.0.0.2")
    insiders: list[smtplib.SMTP] = []
    try:
        with Conversation(relay, source="127.0.0.2") as refused:
            assert refused.greeting.startswith(b"421 4.7.0 Too many connections"), refused.greeting
        insiders = open_clients(relay, 25)
        insiders[0].sendmail("app@example.com", ["inside@example.org"], MESSAGE % b"inside")
    finally:
        for client in outsiders + insiders:
            client.close()
    assert count_rows(relay.data_dir, "submissions") == 1
    assert relay.wait_log("refused connection from 127.0.0.2: 20 connections already open")
