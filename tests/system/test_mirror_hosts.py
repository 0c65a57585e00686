"""Two relays on one PostgreSQL state: what one host learns is enforced at the other's RCPT and
DATA within a second, and a host keeps answering from its mirror while PostgreSQL is down.

Real `serve --sandbox` processes (different ports and data dirs), the CLI as a subprocess,
smtplib at RCPT and DATA, a real PostgreSQL server.
"""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import pytest

from tests.conftest import Relay, free_port, wait_until
from tests.support.postgres import PostgresServer
from tests.support.smtp import message, smtp
from tests.system.test_metrics import get

WITHIN = 1.0  # seconds: a suppression written anywhere is enforced at every host's RCPT within this


def state_config(url: str, extra: str = "") -> str:
    return f'[state]\nurl = "{url}"\n{extra}'


def rcpt_code(relay: Relay, address: str) -> int:
    """The code `relay` answers RCPT TO:<address> with (one transaction, then QUIT)."""
    with smtp(relay) as client:
        assert client.mail("app@example.com")[0] == 250
        return client.rcpt(address)[0]


def data_code(relay: Relay, klass: str) -> int:
    """The code `relay` answers a message of class `klass` with at the end of DATA."""
    with smtp(relay) as client:
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("success@simulator.amazonses.com")[0] == 250
        try:
            return client.data(message("classy", extra_headers=f"X-Message-Class: {klass}\r\n"))[0]
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code


def seconds_until(predicate, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    """How long until `predicate()` holds, polled every 10 ms; fails the test after `timeout`."""
    started = time.monotonic()
    wait_until(predicate, timeout=timeout, interval=0.01, what="the change at the other host")
    return time.monotonic() - started


@pytest.mark.solo  # times a latency or a rate: runs alone (see Makefile)
def test_what_host_a_writes_is_enforced_at_host_b_within_a_second(relay_factory, pg_url: str) -> None:
    a = relay_factory(state_config(pg_url), sandbox=True, name="host-a")
    b = relay_factory(state_config(pg_url), sandbox=True, name="host-b")
    address = "gone@example.org"
    assert rcpt_code(b, address) == 250

    a.cli("suppression", "add", address, "--reason", "asked us to stop", check=True)
    took = seconds_until(lambda: rcpt_code(b, address) == 550)
    assert took < WITHIN, f"host B refused the suppressed address after {took:.2f} s"
    assert rcpt_code(a, address) == 550  # and the host that wrote it, of course

    a.cli("suppression", "clear", address, check=True)  # a clear reaches B as fast
    took = seconds_until(lambda: rcpt_code(b, address) == 250)
    assert took < WITHIN, f"host B accepted the cleared address after {took:.2f} s"

    assert data_code(b, "bulk") == 250
    a.cli("class", "pause", "bulk", "--reason", "complaints", check=True)
    took = seconds_until(lambda: data_code(b, "bulk") == 451)
    assert took < WITHIN, f"host B refused the paused class at DATA after {took:.2f} s"
    assert data_code(b, "transactional") == 250  # the other classes flow
    a.cli("class", "resume", "bulk", check=True)
    took = seconds_until(lambda: data_code(b, "bulk") == 250)
    assert took < WITHIN

    # B's own report on its mirror: current.
    found = b.json("state", "check")
    assert found["ok"] and found["mirror"]["behind"] == 0, found


def test_with_postgresql_stopped_the_intake_answers_from_the_mirror_and_catches_up(
    relay_factory, tmp_path: Path
) -> None:
    server = PostgresServer.started()  # not under pytest's tmp dir: see tests/support/postgres.py
    try:
        url = server.database()
        port = free_port()
        config = state_config(url, 'mirror_max_age = "10s"\nconnect_timeout = "2s"\n')
        config += f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        base = f"http://127.0.0.1:{port}"
        b = relay_factory(config, sandbox=True, name="host-b")
        b.cli("suppression", "add", "gone@example.org", check=True)
        wait_until(lambda: rcpt_code(b, "gone@example.org") == 550, timeout=5, what="the suppression")

        server.stop()  # fast: connections are told, and the server is gone
        started = time.monotonic()
        assert rcpt_code(b, "gone@example.org") == 550  # from the mirror: still refused
        assert rcpt_code(b, "clean@example.org") == 250  # and still accepted, not 451
        assert time.monotonic() - started < 2.0  # answered at once, not after a timeout

        def health() -> dict:  # type: ignore[type-arg]
            status, _, body = get(base + "/healthz")
            return {**json.loads(body), "http": status}

        doc = wait_until(lambda: (d := health())["mirror_age_seconds"] >= 2 and d, timeout=10, what="age")
        assert doc["http"] == 200 and doc["problems"] == []  # a short outage: still healthy
        b.wait_log("cannot read the shared state", timeout=10)
        status, _, metrics = get(base + "/metrics")
        assert status == 200 and "ses_relay_state_mirror_age_seconds" in metrics

        # A restart while PostgreSQL is down: serve starts, from the mirror.
        b.stop()
        b2 = relay_factory(config, sandbox=True, name="host-b")
        assert rcpt_code(b2, "gone@example.org") == 550 and rcpt_code(b2, "clean@example.org") == 250
        checked = b2.cli("state", "check")
        assert checked.returncode == 1 and "reachable: no" in checked.stdout and "mirror:" in checked.stdout

        # Past [state] mirror_max_age the relay reports it (a restart would not help).
        doc = wait_until(lambda: (d := health())["http"] == 503 and d, timeout=20, what="/healthz to fail")
        assert any("state mirror" in p and "mirror_max_age" in p for p in doc["problems"]), doc
        assert rcpt_code(b2, "gone@example.org") == 550  # still answering meanwhile

        server.start()
        b2.cli("suppression", "add", "later@example.org", check=True)  # written while B was behind
        wait_until(lambda: rcpt_code(b2, "later@example.org") == 550, timeout=20, what="the catch-up")
        b2.wait_log("caught up with the shared state", timeout=10)
        assert b2.log().count("cannot read the shared state") == 1  # once, however long it lasted
        doc = wait_until(lambda: (d := health())["http"] == 200 and d, timeout=10, what="/healthz again")
        assert doc["mirror_age_seconds"] < 5
        found = b2.json("state", "check")
        assert found["ok"] and found["mirror"]["behind"] == 0, found
    finally:
        server.cleanup()
