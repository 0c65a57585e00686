"""The metrics registry, refusal reasons and the health rules, in process; rendered text is parsed
with prometheus_client's own parser, so a series Prometheus could not read fails here too.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from relay.ops.metrics import (
    SUPPRESSED_BOUNCE,
    SUPPRESSED_CLASS,
    SUPPRESSED_POLICY,
    Metrics,
    SpoolSnapshot,
    refusal_reason,
    spool_snapshot,
)
from relay.ops.monitor import parse_head, spool_problem
from relay.suppression import Cause, Level, Suppression
from tests.support.readers import parse, value

# -- the pure parts ---------------------------------------------------------------------


def test_spool_problem_needs_an_old_message_and_no_recent_send() -> None:
    old = SpoolSnapshot(depth=3, oldest_age=7200)
    assert spool_problem(SpoolSnapshot(0, 0), stuck_after=3600, last_sent=None, now=10_000) is None
    assert spool_problem(SpoolSnapshot(3, 60), stuck_after=3600, last_sent=None, now=10_000) is None
    assert spool_problem(old, stuck_after=3600, last_sent=9_000, now=10_000) is None  # SES is sending
    why = spool_problem(old, stuck_after=3600, last_sent=1_000, now=10_000)
    assert why is not None and "7200 s old" in why and "for 9000 s" in why
    assert "since this process started" in (spool_problem(old, stuck_after=3600, last_sent=None, now=1) or "")
    assert spool_snapshot(0, None, 100.0) == SpoolSnapshot(0, 0.0)
    assert spool_snapshot(2, 40.0, 100.0) == SpoolSnapshot(2, 60.0)
    assert spool_snapshot(2, 140.0, 100.0) == SpoolSnapshot(2, 0.0)  # a clock step back is not negative


@pytest.mark.parametrize(
    ("head", "parsed"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "/metrics")),
        (b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n", ("GET", "/healthz")),
        (b"GET http://x/metrics HTTP/1.1\r\n\r\n", None),
        (b"GET /metrics\r\n\r\n", None),
        (b"GET /metrics SPDY/3\r\n\r\n", None),
        (b"\x00\x01\x02\r\n\r\n", None),
    ],
)
def test_parse_head(head: bytes, parsed: tuple[str, str] | None) -> None:
    request = parse_head(head)
    assert (None if request is None else (request.method, request.path)) == parsed


def test_refusal_reasons_follow_the_suppression_scope_and_cause() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)

    def entry(klass: str, cause: Cause) -> Suppression:
        return Suppression("a@b.c", klass, Level.HARD, cause, "why", now, now, None)

    assert refusal_reason(entry("*", Cause.BOUNCE)) == SUPPRESSED_BOUNCE
    assert refusal_reason(entry("*", Cause.COMPLAINT)) == SUPPRESSED_POLICY
    assert refusal_reason(entry("*", Cause.MANUAL)) == SUPPRESSED_POLICY
    assert refusal_reason(entry("*", Cause.IMPORT)) == SUPPRESSED_POLICY
    assert refusal_reason(entry("list", Cause.UNSUBSCRIBE)) == SUPPRESSED_CLASS
    assert refusal_reason(entry("bulk", Cause.BOUNCE)) == SUPPRESSED_CLASS


def test_a_fresh_registry_renders_every_series_and_records_calls() -> None:
    m = Metrics()
    m.record_ses_call("retry", 0.2)
    m.record_ses_call("sent", 0.04)
    m.set_paused(["a", "b"], ["b"])
    s = parse(m.render().decode())
    assert value(s, "ses_relay_ses_calls_total", {"outcome": "retry"}) == 1
    assert value(s, "ses_relay_ses_calls_total", {"outcome": "failed"}) == 0
    assert value(s, "ses_relay_ses_latency_seconds_bucket", {"le": "0.05"}) == 1
    assert value(s, "ses_relay_class_paused", {"class": "b"}) == 1
    assert value(s, "ses_relay_suppressions", {"level": "permanent"}) == 0
    assert m.last_ses_success is not None
    assert not any(name.startswith(("python_", "process_")) for name, _ in s)  # our own registry only


def test_the_mirror_age_is_exported_only_once_there_is_a_mirror() -> None:
    m = Metrics()
    assert "ses_relay_state_mirror_age_seconds" not in m.render().decode()  # one host: no mirror
    m.set_mirror_age(2.5)
    assert value(parse(m.render().decode()), "ses_relay_state_mirror_age_seconds", {}) == 2.5
    m.set_mirror_age(None)  # never synced: as old as can be
    assert value(parse(m.render().decode()), "ses_relay_state_mirror_age_seconds", {}) == float("inf")
