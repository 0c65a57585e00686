"""The pure parts of the Lambda handler: reading an SQS batch, chunking it, the answer and its log line."""

from __future__ import annotations

import json

import pytest

from feedback import lambda_handler
from feedback.apply import BatchResult
from feedback.ingest.lambda_sqs import (
    CHUNK,
    NotAnSqsBatch,
    Outcome,
    SqsRecord,
    chunks,
    failed_from,
    records_of,
    summary,
)
from relay.config import ConfigError
from tests.support.lambda_events import QUEUE_ARN, sqs_event, sqs_record


def test_records_keep_their_order_ids_bodies_and_queue() -> None:
    event = sqs_event(["a", "b", "c"])
    records = records_of(event)
    assert [r.message_id for r in records] == [r["messageId"] for r in event["Records"]]
    assert [r.body for r in records] == ["a", "b", "c"]
    assert records[0].source == f"lambda:{QUEUE_ARN} message {records[0].message_id}"


def test_a_body_that_is_not_text_is_kept_as_json_for_the_dead_letters() -> None:
    record = sqs_record("x")
    record["body"] = {"not": "a string"}
    missing = sqs_record("y")
    del missing["body"]
    [odd, none] = records_of({"Records": [record, missing]})
    assert json.loads(odd.body) == {"not": "a string"}
    assert none.body == "null"


@pytest.mark.parametrize(
    "event",
    [None, [], {}, {"Records": "x"}, {"Records": None}, {"Records": [["x"]]}, {"Records": [{"body": "x"}]},
     {"Records": [{"messageId": "", "body": "x"}]}, {"Records": [{"messageId": 7, "body": "x"}]}],
)  # fmt: skip
def test_an_event_that_is_not_an_sqs_batch_is_refused(event: object) -> None:
    with pytest.raises(NotAnSqsBatch):
        records_of(event)


def test_chunks_cover_the_batch_in_order() -> None:
    records = [SqsRecord(str(i), "", "") for i in range(23)]
    parts = chunks(records, 10)
    assert [len(p) for p in parts] == [10, 10, 3]
    assert [r for p in parts for r in p] == records
    assert chunks([], 10) == []
    with pytest.raises(ValueError):
        chunks(records, 0)


def test_the_answer_names_the_failures_for_sqs() -> None:
    records = records_of(sqs_event(["a", "b"]))
    assert Outcome().response() == {"batchItemFailures": []}
    failed = failed_from(records, "no connection")
    assert failed.response() == {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in records]}
    assert failed.store_failed


def test_the_log_line_says_what_was_committed_and_what_goes_back() -> None:
    applied = BatchResult(events=3, duplicates=1, dead_letters=1, suppressions=1, notices=1,
                          kinds={"bounce": 1, "delivery": 2})  # fmt: skip
    done = Outcome(applied=applied, committed=5)
    assert summary(done, 5) == (
        "committed 5 of 5 record(s): 3 event(s) (bounce 1, delivery 2), 1 duplicate(s), "
        "1 dead letter(s), 1 suppression change(s), 1 notice(s) queued"
    )
    half = Outcome(applied=applied, committed=5, failed=["m6", "m7"], error="server closed the connection")
    assert summary(half, 7).endswith("; 2 left for SQS to deliver again: server closed the connection")


def test_records_a_transaction_come_from_the_environment_or_the_default() -> None:
    assert lambda_handler.chunk_size("") == CHUNK
    assert lambda_handler.chunk_size(" 25 ") == 25
    for bad in ("0", "-3", "ten", "2.5"):
        with pytest.raises(ConfigError, match="SES_RELAY_LAMBDA_CHUNK"):
            lambda_handler.chunk_size(bad)


def test_the_config_is_looked_for_inside_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SES_RELAY_CONFIG", "conf/relay.toml")
    assert lambda_handler.config_path() == lambda_handler.PACKAGE_ROOT / "conf" / "relay.toml"
    monkeypatch.setenv("SES_RELAY_CONFIG", "/etc/ses-relay.toml")
    assert str(lambda_handler.config_path()) == "/etc/ses-relay.toml"
    monkeypatch.setenv("SES_RELAY_CONFIG", "")
    bundled = lambda_handler.PACKAGE_ROOT / "ses-relay.toml"
    assert lambda_handler.config_path() == (bundled if bundled.is_file() else None)
