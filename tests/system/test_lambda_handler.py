"""The Lambda handler, invoked in process with SQS-shaped events, against a real PostgreSQL.

`feedback.lambda_handler.handler` is called as Lambda's runtime calls it: an SQS
event-source batch and a context. The state is a fresh database on the session's
private PostgreSQL server (tests/conftest.py); the configuration comes from the
environment, as in Lambda. Outages are real: the server is stopped under the
handler (a fast stop, the clients' connections cut) or the URL names a dead port.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feedback import lambda_handler
from feedback.bodies import parse_body
from feedback.ingest.lambda_sqs import NotAnSqsBatch
from relay.config import ConfigError, StateConfig
from relay.store import Store
from relay.timeutil import from_text, utcnow
from tests.conftest import FIXTURES, free_port
from tests.support.lambda_events import LambdaContext, envelope, failures, message_ids, sqs_event
from tests.support.sns_sqs import delivery, ses_mail
from tests.support.stores import Place, new_submission, shipped

SES_FIXTURES = sorted([*FIXTURES.glob("event_*.json"), *FIXTURES.glob("notification_*.json")])
EVERY_KIND = {
    "send", "delivery", "bounce", "complaint", "reject", "delivery_delay", "open", "click",
    "rendering_failure", "subscription",
}  # fmt: skip
STATE_TABLES = ("events", "suppressions", "suppression_changes", "notices", "dead_letters", "review",
                "recipients", "transient_bounces", "unmatched_events")  # fmt: skip


@pytest.fixture
def lambda_env(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    """The function's environment: the state URL, and a config file; a cold start per test."""
    config = tmp_path / "lambda.toml"
    config.write_text('[state]\nconnect_timeout = "2s"\n')
    monkeypatch.setenv("SES_RELAY_STATE_URL", pg_url)
    monkeypatch.setenv("SES_RELAY_CONFIG", str(config))
    monkeypatch.delenv("SES_RELAY_LAMBDA_CHUNK", raising=False)
    lambda_handler.shutdown()
    yield Place(tmp_path, pg_url)
    lambda_handler.shutdown()


def invoke(event: dict[str, Any], context: Any = None) -> list[str]:
    return failures(lambda_handler.handler(event, context or LambdaContext()))


def snapshot(place: Place) -> dict[str, list[Any]]:
    """Every row of the state's tables the feedback path writes, in a fixed order."""
    return {table: sorted(map(repr, place.rows(f"SELECT * FROM {table}"))) for table in STATE_TABLES}


def count(place: Place, table: str) -> int:
    return int(place.rows(f"SELECT count(*) FROM {table}")[0][0])


def deliveries(n: int, prefix: str = "r") -> list[str]:
    """`n` bodies of distinct Delivery events, raw and enveloped in turn."""
    bodies = []
    for i in range(n):
        address = f"{prefix}{i}@example.org"
        payload = json.dumps(delivery(ses_mail(f"0102018e-{prefix}-{i:04d}-000000", [address]), [address]))
        bodies.append(envelope(payload) if i % 2 else payload)
    return bodies


def seed_sent(place: Place, address: str, ses_message_id: str) -> str:
    """A submission the relays accepted and SES took (in the shared state): its id."""

    async def go() -> str:
        store = await Store.open(place.data_dir / "relay.db", state=StateConfig(url=place.state_url or ""))
        try:
            sub = new_submission((address,), at=utcnow() - timedelta(minutes=5))
            await store.accept(sub, b"Subject: hi\r\n\r\nhi\r\n", sub.created_at.timestamp())
            await store.record_outcome(sub.id, [address], "sent", now=utcnow(), ses_message_id=ses_message_id)
            await shipped(store)  # a relay's worker ships its outbox to the shared state
            return sub.id
        finally:
            await store.close()

    return asyncio.run(go())


def test_every_ses_event_kind_raw_and_in_an_envelope_is_applied(lambda_env: Place) -> None:
    bounce = json.loads((FIXTURES / "event_bounce_permanent.json").read_text())
    bounced = bounce["bounce"]["bouncedRecipients"][0]["emailAddress"].lower()
    sid = seed_sent(lambda_env, bounced, bounce["mail"]["messageId"])
    texts = [path.read_text() for path in SES_FIXTURES]
    event = sqs_event([*texts, *(envelope(text) for text in texts)])

    assert invoke(event) == []

    expected = {e.dedupe_key for text in texts for e in parse_body(text).events}
    logged = {r["dedupe_key"]: r["kind"] for r in lambda_env.rows("SELECT dedupe_key, kind FROM events")}
    assert set(logged) == expected  # every event once: each envelope's copy was a duplicate
    assert set(logged.values()) == EVERY_KIND
    assert count(lambda_env, "dead_letters") == 0
    # What the events did: the bounce of mail the relay sent suppresses its recipient in
    # every class, marks the recipient bounced and owes its sender a notice.
    [entry] = lambda_env.rows("SELECT class, cause FROM suppressions WHERE address = ?", bounced)
    assert (entry["class"], entry["cause"]) == ("*", "bounce")
    [recipient] = lambda_env.rows("SELECT status FROM recipients WHERE submission_id = ?", sid)
    assert recipient["status"] == "bounced"
    [notice] = lambda_env.rows("SELECT recipient, sender FROM notices WHERE submission_id = ?", sid)
    assert (notice["recipient"], notice["sender"]) == (bounced, "app@example.com")


def test_a_redelivered_batch_changes_nothing(lambda_env: Place) -> None:
    texts = [path.read_text() for path in SES_FIXTURES]
    event = sqs_event([*texts[:8], *(envelope(text) for text in texts[8:])])
    assert invoke(event) == []
    before = snapshot(lambda_env)
    assert before["events"] and before["suppressions"]

    assert invoke(event) == []  # SQS delivers the same records again
    assert invoke(sqs_event(texts[3:5])) == []  # and some of them in another batch
    assert snapshot(lambda_env) == before


def test_an_unparseable_body_is_a_dead_letter_and_not_retried(lambda_env: Place) -> None:
    good = deliveries(1)
    garbage = ["not json {", "[1, 2]", json.dumps({"Type": "Notification", "Message": "{truncated"}), ""]
    event = sqs_event([*garbage, *good])

    assert invoke(event) == []  # all of them may be deleted from the queue

    letters = lambda_env.rows("SELECT source, body, error FROM dead_letters ORDER BY id")
    assert [d["body"] for d in letters] == garbage
    assert all(d["error"] for d in letters)
    ids = message_ids(event)
    assert [d["source"] for d in letters] == [
        f"lambda:{event['Records'][0]['eventSourceARN']} message {i}" for i in ids[:4]
    ]
    assert count(lambda_env, "events") == 1


def test_an_unreachable_store_hands_every_record_back(
    lambda_env: Place, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://relay:s3cret-pw@127.0.0.1:{free_port()}/ses_relay"
    monkeypatch.setenv("SES_RELAY_STATE_URL", dead)
    event = sqs_event(deliveries(3))

    with caplog.at_level(logging.INFO):
        assert invoke(event) == message_ids(event)
        assert invoke(event) == message_ids(event)  # the next invocation tries again, and fails again

    assert "s3cret-pw" not in caplog.text
    assert "left for SQS to deliver again" in caplog.text
    assert count(lambda_env, "events") == 0


def test_when_the_store_goes_away_mid_batch_only_the_uncommitted_records_are_failures(
    lambda_env: Place, pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SES_RELAY_LAMBDA_CHUNK", "5")
    event = sqs_event(deliveries(20))
    ids = message_ids(event)

    class StopAfterSecondChunk(logging.Handler):
        """Stops the server the moment the handler has committed records 6-10."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("committed records 6-10 "):
                pg_server.stop("fast")

    logger = logging.getLogger("ses_relay.feedback.lambda")
    trigger = StopAfterSecondChunk(logging.DEBUG)
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    logger.addHandler(trigger)
    try:
        failed = invoke(event)
    finally:
        logger.removeHandler(trigger)
        pg_server.start()
        pg_server.wait_ready()

    assert failed == ids[10:]  # the third chunk met the outage; nothing after it was tried
    logged = {r["ses_message_id"] for r in lambda_env.rows("SELECT ses_message_id FROM events")}
    assert logged == {f"0102018e-r-{i:04d}-000000" for i in range(10)}

    # SQS delivers the failures again, and the server is back: the next invocation opens
    # the state afresh and commits them. Then everything once more: nothing changes.
    assert invoke({"Records": event["Records"][10:]}) == []
    assert count(lambda_env, "events") == 20
    before = snapshot(lambda_env)
    assert invoke(event) == []
    assert snapshot(lambda_env) == before


def test_records_without_time_to_commit_them_are_handed_back(
    lambda_env: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SES_RELAY_LAMBDA_CHUNK", "4")
    event = sqs_event(deliveries(12))
    # 60 s left before the second chunk, then 3 s: less than a connection timeout (2 s) and
    # the spare 2 s, so the rest goes back to SQS rather than risk the function's timeout.
    context = LambdaContext(remaining_ms=[60_000, 3_000])
    assert invoke(event, context) == message_ids(event)[8:]
    assert count(lambda_env, "events") == 8

    # A function given less than that from the start still tries its first chunk:
    # handing everything back would only come round again.
    assert invoke(event, LambdaContext(remaining_ms=[1_000])) == message_ids(event)[4:]
    assert count(lambda_env, "events") == 8  # the first chunk's records were duplicates


def test_the_config_file_decides_the_policy(lambda_env: Place, tmp_path: Path) -> None:
    (tmp_path / "lambda.toml").write_text('[policy]\npermanent_general_expiry = "2d"\n')
    text = (FIXTURES / "event_bounce_permanent.json").read_text()

    assert invoke(sqs_event([text])) == []

    [entry] = lambda_env.rows("SELECT created_at, expires_at FROM suppressions")
    assert from_text(entry["expires_at"]) - from_text(entry["created_at"]) == timedelta(days=2)


def test_a_config_inside_the_package_is_found_by_a_relative_path(
    lambda_env: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SES_RELAY_CONFIG", "tests/fixtures/no-such-config.toml")
    with pytest.raises(ConfigError, match=r"tests/fixtures/no-such-config\.toml does not exist"):
        invoke(sqs_event(deliveries(1)))
    assert lambda_handler.config_path() == lambda_handler.PACKAGE_ROOT / "tests/fixtures/no-such-config.toml"


def test_without_a_state_url_the_function_fails_loudly(
    lambda_env: Place, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SES_RELAY_STATE_URL")
    event = sqs_event(deliveries(1))
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigError, match="SES_RELAY_STATE_URL"):
        invoke(event)
    assert "configuration error" in caplog.text


def test_an_event_that_is_not_an_sqs_batch_is_an_error(lambda_env: Place) -> None:
    with pytest.raises(NotAnSqsBatch, match="Records"):
        invoke({"detail-type": "Scheduled Event"})
    with pytest.raises(NotAnSqsBatch, match="messageId"):
        invoke({"Records": [{"body": "{}"}]})
    assert invoke({"Records": []}) == []
    assert count(lambda_env, "dead_letters") == 0
