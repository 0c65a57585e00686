"""Benchmark: the Lambda handler's throughput, SES events/s, for an SQS batch of 1,000 records.

`feedback.lambda_handler.handler` is called in this process, as Lambda's runtime calls
it, with one SQS event-source batch of N records (the SES events of
bench/feedback_ingest.py: 60 % Delivery, 25 % Send, 10 % Bounce, 5 % Complaint, half
in SNS envelopes), against a PostgreSQL on 127.0.0.1: a private server started for the
run (tests/support/postgres.py, fsync off) unless --state-url names one. For each
chunk size (records a transaction, SES_RELAY_LAMBDA_CHUNK) the function starts cold
on a fresh database, is warmed by a one-record invocation (which opens the state),
then timed on the batch; the same batch is then delivered again (every record a
duplicate) and timed too.

Prints one JSON line:
  {"benchmark": "lambda_batch", "events": N, "chunk": C, "seconds": ..., "events_per_s": ...,
   "redelivered_events_per_s": ..., "cold_start_s": ..., "by_chunk": {...}, ...}
the top-level figures being those of the default chunk size (10). Bounded: N records,
each invocation given --max-seconds as its Lambda time limit (what it has no time for
comes back as failures, and the line says so).

    .venv/bin/python bench/lambda_batch.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.feedback_ingest import KINDS, ses_event, sns_envelope
from feedback import lambda_handler
from feedback.ingest.lambda_sqs import CHUNK

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:ses-relay-transactional-events"


class Context:
    """The parts of Lambda's context object the handler reads."""

    def __init__(self, seconds: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def sqs_batch(count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    kinds = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    recipients = [f"user{i}@example{i % 97}.org" for i in range(max(1, count // 4))]
    start = datetime.now(UTC) - timedelta(hours=2)
    records = []
    for n in range(count):
        at = start + timedelta(seconds=n)
        payload = ses_event(rng, rng.choices(kinds, weights)[0], n, rng.choice(recipients), at)
        body = json.dumps(sns_envelope(rng, payload, at) if n % 2 == 0 else payload)
        records.append({"messageId": str(uuid.UUID(int=rng.getrandbits(128))), "body": body,
                        "eventSource": "aws:sqs", "eventSourceARN": QUEUE_ARN})  # fmt: skip
    return {"Records": records}


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[Any]:
    """A server to make databases on: the one --state-url names, or a private one for the run."""
    if url:
        yield None
        return
    from tests.support.postgres import PostgresServer

    server = PostgresServer.started()
    try:
        yield server
    finally:
        server.cleanup()


def invoke(event: dict[str, Any], max_seconds: float) -> tuple[float, int]:
    """One invocation: (seconds, records handed back)."""
    started = time.perf_counter()
    answer = lambda_handler.handler(event, Context(max_seconds))
    return time.perf_counter() - started, len(answer["batchItemFailures"])


def run_chunk(url: str, chunk: int, event: dict[str, Any], warm: dict[str, Any], max_seconds: float) -> dict:
    os.environ["SES_RELAY_STATE_URL"] = url
    os.environ["SES_RELAY_LAMBDA_CHUNK"] = str(chunk)
    lambda_handler.shutdown()
    try:
        cold, _ = invoke(warm, max_seconds)
        seconds, failed = invoke(event, max_seconds)
        again, failed_again = invoke(event, max_seconds)
    finally:
        lambda_handler.shutdown()
    n = len(event["Records"])
    return {
        "chunk": chunk,
        "seconds": round(seconds, 3),
        "events_per_s": round((n - failed) / seconds, 1),
        "redelivered_events_per_s": round((n - failed_again) / again, 1),
        "cold_start_s": round(cold, 3),
        "failed": failed + failed_again,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="records in the batch (default 1000)")
    parser.add_argument("--chunks", default=f"{CHUNK},100,1000", help="records a transaction, comma-sep.")
    parser.add_argument("--state-url", help="an existing PostgreSQL server (a database a run)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="each invocation's time limit (120)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    chunk_sizes = [int(c) for c in args.chunks.split(",")]
    if args.events < 1 or args.max_seconds <= 0 or min(chunk_sizes) < 1:
        parser.error("--events, --chunks and --max-seconds must be positive")
    common.check_quiet()
    os.environ.pop("SES_RELAY_CONFIG", None)
    os.environ["SES_RELAY_LOG_LEVEL"] = "warning"
    event = sqs_batch(args.events, args.seed)
    warm = sqs_batch(1, args.seed + 1)
    warm["Records"][0]["messageId"] = "warm-up"
    runs = []
    with postgres(args.state_url) as server:
        for chunk in chunk_sizes:
            if server is not None:
                url = server.database()
            else:
                import psycopg

                name = f"bench_{uuid.uuid4().hex[:12]}"
                with psycopg.connect(args.state_url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                url = args.state_url.rsplit("/", 1)[0] + f"/{name}"
            common.log(f"chunk {chunk}: {args.events} records")
            runs.append(run_chunk(url, chunk, event, warm, args.max_seconds))
    main_run = next((r for r in runs if r["chunk"] == CHUNK), runs[0])
    figures = {"benchmark": "lambda_batch", "events": args.events, **main_run,
               "by_chunk": {str(r["chunk"]): r for r in runs}, "machine": common.machine()}  # fmt: skip
    common.emit(figures)
    return 1 if any(r["failed"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(common.run_main("lambda_batch", main))
