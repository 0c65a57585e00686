"""/metrics, /healthz and /readyz of a real `ses-relay serve --sandbox`, scraped over HTTP.

The scrape is parsed with prometheus_client's own text parser, so a series that
Prometheus could not read fails here too.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from relay.ops.metrics import MALFORMED, SUPPRESSED_BOUNCE, SUPPRESSED_CLASS, SUPPRESSED_POLICY
from relay.suppression import Cause, Level
from tests.conftest import Relay, free_port, wait_until
from tests.support.readers import Samples, parse, value
from tests.support.relaydb import suppress
from tests.support.smtp import message, smtp

SUCCESS = "success@simulator.amazonses.com"
BOUNCE = "bounce@simulator.amazonses.com"
OOTO = "ooto@simulator.amazonses.com"


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; a 4xx/5xx is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(base: str) -> Samples:
    status, content_type, body = get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return parse(body)


def metrics_relay(relay_factory: Any, extra: str = "") -> tuple[Relay, str]:
    port = free_port()
    relay = relay_factory(f'[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}', sandbox=True)
    return relay, f"http://127.0.0.1:{port}"


def test_metrics_count_accepted_refused_sent_and_feedback_after_a_few_messages(relay_factory) -> None:
    relay, base = metrics_relay(relay_factory)
    suppress(relay.data_dir, "gone@example.org")  # all classes, bounce, hard
    suppress(relay.data_dir, "angry@example.org", cause=Cause.COMPLAINT, level=Level.PERMANENT)
    suppress(
        relay.data_dir, "listonly@example.org", klass="list", cause=Cause.COMPLAINT, level=Level.PERMANENT
    )

    with smtp(relay) as client:
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt(SUCCESS)[0] == 250
        assert client.rcpt(BOUNCE)[0] == 250
        assert client.rcpt("gone@example.org")[0] == 550
        assert client.rcpt("angry@example.org")[0] == 550
        assert client.rcpt("no-domain")[0] == 501
        assert client.data(message("receipt"))[0] == 250
    with smtp(relay) as client:
        assert client.mail("news@example.com")[0] == 250
        assert client.rcpt("listonly@example.org")[0] == 250  # suppressed for list mail only: found at DATA
        assert client.rcpt(OOTO)[0] == 250
        assert client.data(message("news", "List-Id: <news.example.com>\r\n"))[0] == 250

    def settled() -> Samples | None:
        s = scrape(base)
        done = value(s, "ses_relay_feedback_events_total", {"kind": "delivery"}) == 2
        return s if done and value(s, "ses_relay_feedback_events_total", {"kind": "bounce"}) == 1 else None

    s = wait_until(settled, timeout=15, what="both messages sent and their feedback applied")
    accepted = "ses_relay_messages_accepted_total"
    assert value(s, accepted, {"class": "transactional"}) == 1
    assert value(s, accepted, {"class": "list"}) == 1
    assert value(s, accepted, {"class": "bulk"}) is None
    refused = "ses_relay_recipients_refused_total"
    assert value(s, refused, {"reason": SUPPRESSED_BOUNCE}) == 1
    assert value(s, refused, {"reason": SUPPRESSED_POLICY}) == 1
    assert value(s, refused, {"reason": SUPPRESSED_CLASS}) == 1
    assert value(s, refused, {"reason": MALFORMED}) == 1
    calls = "ses_relay_ses_calls_total"
    assert [value(s, calls, {"outcome": o}) for o in ("sent", "retry", "failed")] == [2, 0, 0]
    assert value(s, "ses_relay_ses_latency_seconds_count") == 2
    assert 0 < (value(s, "ses_relay_ses_latency_seconds_sum") or 0) < 10
    assert value(s, "ses_relay_ses_latency_seconds_bucket", {"le": "+Inf"}) == 2
    assert value(s, "ses_relay_feedback_events_total", {"kind": "send"}) == 3  # one per recipient sent
    assert value(s, "ses_relay_spool_depth") == 0
    assert value(s, "ses_relay_spool_oldest_age_seconds") == 0
    # gone@ and the bounce simulator are hard; angry@ and listonly@ permanent
    levels = {
        lvl: value(s, "ses_relay_suppressions", {"level": lvl}) for lvl in ("soft", "hard", "permanent")
    }
    assert levels == {"soft": 0, "hard": 2, "permanent": 2}
    paused = {k: value(s, "ses_relay_class_paused", {"class": k}) for k in ("transactional", "list", "bulk")}
    assert paused == {"transactional": 0, "list": 0, "bulk": 0}

    relay.cli("class", "pause", "bulk", check=True)
    assert value(scrape(base), "ses_relay_class_paused", {"class": "bulk"}) == 1  # read at scrape time

    status, content_type, body = get(base + "/healthz")
    assert (status, content_type, json.loads(body)["status"]) == (200, "application/json", "ok")
    status, _, body = get(base + "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "problems": []})


def test_healthz_fails_while_the_spool_is_stuck_and_recovers(relay_factory) -> None:
    relay, base = metrics_relay(relay_factory, '\nstuck_after = "1s"\n[guard]\naction = "hold"\n')
    relay.cli("class", "pause", "bulk", check=True)
    with smtp(relay) as client:  # held: accepted, kept in the spool while the class is paused
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt(SUCCESS)[0] == 250
        assert client.data(message("sale", "Precedence: bulk\r\n"))[0] == 250

    def unhealthy() -> dict | None:
        status, _, body = get(base + "/healthz")
        return json.loads(body) if status == 503 else None

    doc = wait_until(unhealthy, timeout=10, what="/healthz to report the stuck spool")
    assert doc["status"] == "fail" and doc["spool_depth"] == 1
    assert "spool stuck" in doc["problems"][0] and "nothing was sent to SES" in doc["problems"][0]
    assert get(base + "/readyz")[0] == 200  # stuck is a health problem, not a readiness one
    assert value(scrape(base), "ses_relay_spool_depth") == 1

    relay.cli("class", "resume", "bulk", check=True)
    wait_until(lambda: get(base + "/healthz")[0] == 200, timeout=10, what="/healthz to recover")
    s = scrape(base)
    assert value(s, "ses_relay_ses_calls_total", {"outcome": "sent"}) == 1
    assert value(s, "ses_relay_messages_accepted_total", {"class": "bulk"}) == 1


def raw_http(port: int, request: bytes) -> bytes:
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # the server closed on unread input (over-long request): that is the answer
    return b"".join(chunks)


def test_the_monitor_answers_bad_requests_without_falling_over(relay_factory) -> None:
    relay, base = metrics_relay(relay_factory)
    port = int(base.rsplit(":", 1)[1])
    assert raw_http(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert raw_http(port, b"\xff\xfe /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert raw_http(port, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.0 405 ")
    assert raw_http(port, b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 404 ")
    assert (
        raw_http(port, b"GET /x" + b"a" * 20000 + b" HTTP/1.0\r\n\r\n") == b""
    )  # over the head limit: closed
    head = raw_http(port, b"HEAD /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and head.endswith(b"\r\n\r\n")  # headers only
    assert get(base + "/metrics")[0] == 200  # still serving
    assert relay.proc.poll() is None


def test_a_bad_metrics_listen_address_is_a_configuration_error(relay_factory, tmp_path) -> None:
    from tests.conftest import run_cli

    config = tmp_path / "bad.toml"
    config.write_text('[metrics]\nlisten = "9108"\n')
    result = run_cli("serve", "--sandbox", data_dir=tmp_path / "d", config=config)
    assert result.returncode == 2 and "metrics.listen" in result.stderr
