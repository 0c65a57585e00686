"""SMTP clients for tests against a running relay: smtplib for well-formed mail, and a raw
socket (`Conversation`) for what smtplib would correct on the way out."""

from __future__ import annotations

import smtplib
import socket
import time

from tests.conftest import Relay


def message(subject: str = "hello", extra_headers: str = "", body: str = "Hi there.\r\n") -> bytes:
    return (
        f"From: App <app@example.com>\r\nTo: someone@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\n{extra_headers}\r\n{body}"
    ).encode()


def smtp(relay: Relay) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    client.ehlo("client.example.com")
    return client


def submission_id(reply: bytes) -> str:
    text = reply.decode()
    assert text.startswith("2.0.0 Ok: queued as "), text
    return text.rsplit(" ", 1)[1]


def send(relay: Relay, rcpts: list[str], data: bytes, sender: str = "app@example.com") -> tuple[int, bytes]:
    with smtp(relay) as client:
        assert client.mail(sender)[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(data)


class Conversation:
    """A raw SMTP client: smtplib would fix the very line endings these tests must send."""

    def __init__(self, relay: Relay, *, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", relay.port), timeout=10, source_address=(source, 0) if source else None
        )
        self.buffer = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One (possibly multi-line) reply, as raw bytes."""
        lines: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            while b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                lines.append(line)
                if line[3:4] != b"-":
                    return b"\r\n".join(lines)
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"\r\n".join(lines)
            self.buffer += chunk
        raise AssertionError(f"no complete reply in 10 s: {lines!r}")

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def envelope(conv: Conversation, rcpts: list[str]) -> None:
    assert conv.cmd(b"EHLO client.example.com").startswith(b"250")
    assert conv.cmd(b"MAIL FROM:<app@example.com>").startswith(b"250")
    for rcpt in rcpts:
        assert conv.cmd(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")
    assert conv.cmd(b"DATA").startswith(b"354")
