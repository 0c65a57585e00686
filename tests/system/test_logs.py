"""Logs a person can read: a real `serve` process, its standard error, real smtplib clients.

At info a message is one `accepted` line (the intake) and one SES outcome line (the
sender, in the worker process); aiosmtpd's per-command protocol log only at debug.
`--log-format json` makes every line of both processes one JSON object. The
redaction rules are table-tested in tests/unit/test_logs.py, ordinary words included.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import SES_RELAY, child_env, free_port, wait_until

MESSAGES = 6
MESSAGE = b"From: App <app@example.com>\r\nSubject: log %d\r\n\r\nHello.\r\n"


class Serve:
    """`ses-relay serve --sandbox` with its standard error kept apart from standard output."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        cmd = [SES_RELAY, "serve", "--sandbox", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "none.toml"), *args]
        (tmp_path / "none.toml").write_text("")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        wait_until(
            lambda: any("listening on" in line for line in self.stdout) or self.proc.poll() is not None,
            timeout=30,
            what="serve to listen",
        )
        assert self.proc.poll() is None, "".join(self.stderr)

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def log(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> list[str]:
        """Stop serve (and so its worker); every line it wrote to standard error."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.2)  # the pump threads drain what is left in the pipes
        return [line.rstrip("\n") for line in self.stderr]


def send_messages(port: int) -> list[str]:
    """MESSAGES messages: one connection each but the last two, which share one. Their ids."""
    ids: list[str] = []

    def one(client: smtplib.SMTP, i: int) -> None:
        client.ehlo("app.example.com")
        client.mail("app@example.com")
        assert client.rcpt(f"r{i}@example.org")[0] == 250
        code, text = client.data(MESSAGE % i)
        assert code == 250, text
        ids.append(text.decode().rsplit(" ", 1)[1])

    for i in range(MESSAGES - 2):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            one(client, i)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        one(client, MESSAGES - 2)
        client.rset()
        one(client, MESSAGES - 1)
    return ids


def assert_two_lines_a_message(lines: list[str], ids: list[str]) -> None:
    for sid in ids:
        assert sum(f"accepted {sid} " in line for line in lines) == 1, sid
        assert sum(f"{sid}: sent to 1 recipient(s) as " in line for line in lines) == 1, sid
    text = "\n".join(lines)
    chatter = ("mail.log", "Connection lost", "Available AUTH", ">>", "replied", ") recip: ", ") sender: ")
    for words in chatter:
        assert words not in text, words
    # Per message: the accepted line and the outcome; nothing else names the message.
    assert sum(any(sid in line for sid in ids) for line in lines) == 2 * len(ids)


def test_info_log_is_one_accepted_and_one_outcome_line_a_message(tmp_path: Path) -> None:
    serve = Serve(tmp_path)
    try:
        ids = send_messages(serve.port)
        wait_until(lambda: serve.log().count(": sent to ") >= MESSAGES, timeout=30, what="every message sent")
    finally:
        lines = serve.stop()
    assert len(ids) == MESSAGES
    assert_two_lines_a_message(lines, ids)
    accepted = next(line for line in lines if f"accepted {ids[0]} " in line)
    assert " INFO ses_relay.smtp: " in accepted and "client=127.0.0.1 " in accepted


def test_json_log_format_is_one_object_a_line_from_serve_and_its_worker(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--log-format", "json")
    try:
        ids = send_messages(serve.port)
        wait_until(lambda: serve.log().count(": sent to ") >= MESSAGES, timeout=30, what="every message sent")
    finally:
        lines = serve.stop()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert entries and all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", e["time"]) for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"ses_relay.smtp", "ses_relay.sender"} <= loggers  # the intake and the worker both
    assert_two_lines_a_message([e["message"] for e in entries], ids)


def test_debug_level_still_shows_the_protocol_log(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--log-level", "debug")
    try:
        with smtplib.SMTP("127.0.0.1", serve.port, timeout=30) as client:
            client.noop()
        wait_until(lambda: "Connection lost" in serve.log() or "connection lost" in serve.log(),
                   what="the protocol log")  # fmt: skip
    finally:
        lines = serve.stop()
    protocol = [line for line in lines if " mail.log: " in line]
    assert protocol and all(" DEBUG mail.log: " in line for line in protocol)
    assert any("b'noop'" in line for line in protocol)
