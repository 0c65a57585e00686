"""Benchmark: how fast the feedback path ingests SES events (parse, decide, one transaction per batch).

Generates N realistic SES events (event-publishing JSON; half wrapped in SNS envelopes,
as they arrive from an SNS -> SQS subscription, half raw, as with raw message delivery)
into a temporary JSON Lines file, then replays them with `feedback.ingest.replay.replay` into a
fresh store in a temporary directory: the same apply path as `feedback consume`, minus
SQS. The mix: 60 % Delivery, 25 % Send, 10 % Bounce (Permanent General/NoEmail and
Transient General/MailboxFull), 5 % Complaint, over a pool of recipients small enough
that addresses repeat (transient-bounce history, suppression merges).

With `--postgres` the state is a fresh database on a private PostgreSQL server started
for the run (tests/support/postgres.py, fsync off), with `--state-url URL` a fresh
database on the server URL names (dropped afterwards): the shared state of several
relays, where each statement is a round trip.

Prints one JSON line:
  {"benchmark": "feedback_ingest", "state": "sqlite", "events": N, "seconds": ...,
   "events_per_s": ..., "cpu_s": ..., "events_per_cpu_s": ..., "peak_rss_mb": ...}
(`cpu_s`: this process's CPU time during the replay; with PostgreSQL the server's is not in it.)
Only the replay is timed, not the generation. `--max-seconds` bounds the run: past it the
replay is cancelled, the line says "timed_out": true and the figures cover what was applied.

    .venv/bin/python bench/feedback_ingest.py --events 20000
    .venv/bin/python bench/feedback_ingest.py --events 20000 --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedback.ingest.replay import replay
from relay.config import Config, StateConfig
from relay.store import Store

KINDS = (("Delivery", 60), ("Send", 25), ("Bounce", 10), ("Complaint", 5))
BOUNCES = (
    ("Permanent", "General"),
    ("Permanent", "NoEmail"),
    ("Transient", "General"),
    ("Transient", "MailboxFull"),
)
CLASSES = (("transactional", "tx"), ("list", "list"), ("bulk", "bulk"))


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ses_event(rng: random.Random, kind: str, n: int, recipient: str, at: datetime) -> dict[str, Any]:
    klass, config_set = rng.choice(CLASSES)
    message_id = f"0102018e{n:08x}-{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-000000"
    sent = at - timedelta(seconds=rng.randint(1, 600))
    mail = {
        "timestamp": iso(sent),
        "source": "app@example.com",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "App <app@example.com>"},
            {"name": "To", "value": recipient},
            {"name": "Subject", "value": f"Your receipt #{n}"},
            {"name": "MIME-Version", "value": "1.0"},
            {"name": "Content-Type", "value": "text/plain; charset=UTF-8"},
        ],
        "commonHeaders": {
            "from": ["App <app@example.com>"],
            "to": [recipient],
            "subject": f"Your receipt #{n}",
        },
        "tags": {
            "ses:configuration-set": [config_set],
            "ses:source-ip": ["192.0.2.10"],
            "ses:from-domain": ["example.com"],
            "ses:caller-identity": ["ses-relay"],
            "ses:outgoing-ip": ["54.240.3.7"],
            "message-class": [klass],
            "submission-id": [f"{n:020x}"],
        },
    }
    stamp = iso(at)
    feedback_id = f"0100018e{n:08x}-{rng.getrandbits(32):08x}-000000"
    if kind == "Delivery":
        detail_key, detail = (
            "delivery",
            {
                "timestamp": stamp,
                "processingTimeMillis": rng.randint(300, 5000),
                "recipients": [recipient],
                "smtpResponse": "250 2.0.0 OK 1709635264 a1si123456wmq.12 - gsmtp",
                "reportingMTA": "a8-30.smtp-out.amazonses.com",
                "remoteMtaIp": "198.51.100.25",
            },
        )
    elif kind == "Send":
        detail_key, detail = "send", {}
    elif kind == "Bounce":
        bounce_type, subtype = rng.choice(BOUNCES)
        code = "5.1.1" if bounce_type == "Permanent" else "4.2.2"
        detail_key, detail = (
            "bounce",
            {
                "bounceType": bounce_type,
                "bounceSubType": subtype,
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": code,
                        "diagnosticCode": f"smtp; {code[0]}50 {code} <{recipient}>: mailbox unavailable",
                    }
                ],
                "timestamp": stamp,
                "feedbackId": feedback_id,
                "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
            },
        )
    else:
        detail_key, detail = (
            "complaint",
            {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": stamp,
                "feedbackId": feedback_id,
                "userAgent": "Yahoo!-Mail-Feedback/2.0",
                "complaintFeedbackType": "abuse",
                "arrivalDate": stamp,
            },
        )
    return {"eventType": kind, "mail": mail, detail_key: detail}


def sns_envelope(rng: random.Random, payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": f"{rng.getrandbits(128):032x}",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
        "Message": json.dumps(payload),
        "Timestamp": iso(at),
        "SignatureVersion": "1",
        "Signature": "EXAMPLE" + "A" * 160,
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    }


def generate(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    kinds = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    recipients = [f"user{i}@example{i % 97}.org" for i in range(max(1, count // 4))]
    start = datetime.now(UTC) - timedelta(days=2)
    step = timedelta(days=2) / max(1, count)
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            at = start + step * n
            payload = ses_event(rng, rng.choices(kinds, weights)[0], n, rng.choice(recipients), at)
            doc = sns_envelope(rng, payload, at) if n % 2 == 0 else payload
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")


async def ingest(
    path: Path, db_path: Path, max_seconds: float, state: StateConfig | None = None
) -> tuple[float, float, bool, Any]:
    store = await Store.open(db_path, state=state)
    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        try:
            result = await asyncio.wait_for(replay(store, [path], Config()), timeout=max_seconds)
            timed_out = False
        except TimeoutError:
            result, timed_out = None, True
        return time.perf_counter() - started, cpu_seconds() - cpu, timed_out, result
    finally:
        await store.close()


def cpu_seconds() -> float:
    """CPU time of this process so far (every thread): on a loaded machine, a figure the
    other processes do not move as they move the wall clock's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def state_database(server_url: str | None, private: bool) -> Iterator[str | None]:
    """The URL of a fresh PostgreSQL database for the run (None: the data dir's SQLite)."""
    if not private and not server_url:
        yield None
        return
    import psycopg

    server = None
    if private:
        from tests.support.postgres import PostgresServer

        server = PostgresServer()
        server.start()
        server.wait_ready()
        server_url = server.url()
    assert server_url is not None
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        if server is not None:
            server.cleanup()
        else:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def counts(db_path: Path, url: str | None) -> tuple[int, int, int]:
    """Events logged, dead letters and suppressions in the state."""
    statements = [f"SELECT count(*) FROM {t}" for t in ("events", "dead_letters", "suppressions")]
    if url is None:
        db = sqlite3.connect(db_path)
        try:
            return tuple(int(db.execute(s).fetchone()[0]) for s in statements)  # type: ignore[return-value]
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return tuple(int(conn.execute(s).fetchone()[0]) for s in statements)  # type: ignore[return-value, index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="how many SES events (default 100000)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="give up after this long (300)")
    parser.add_argument("--seed", type=int, default=4, help="random seed for the generated events")
    parser.add_argument("--postgres", action="store_true", help="into a private PostgreSQL server")
    parser.add_argument("--state-url", help="into a fresh database on this PostgreSQL server")
    args = parser.parse_args(argv)
    if args.events < 1 or args.max_seconds <= 0:
        parser.error("--events and --max-seconds must be positive")

    with tempfile.TemporaryDirectory(prefix="ses-relay-bench-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        db_path = Path(tmp) / "relay.db"
        generate(events_file, args.events, args.seed)
        with state_database(args.state_url, args.postgres) as url:
            state = None if url is None else StateConfig(url=url)
            seconds, cpu, timed_out, result = asyncio.run(
                ingest(events_file, db_path, args.max_seconds, state)
            )
            applied, dead, suppressed = counts(db_path, url)

    processed = applied + dead if timed_out else args.events
    figures: dict[str, Any] = {
        "benchmark": "feedback_ingest",
        "state": "sqlite" if url is None else "postgresql",
        "events": args.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(processed / seconds, 1) if seconds else None,
        "cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(processed / cpu, 1) if cpu else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "applied": applied,
        "dead_letters": dead,
        "suppressions": suppressed,
    }
    if timed_out:
        figures["timed_out"] = True
    elif result is not None and result.events != applied:
        figures["mismatch"] = f"replay reported {result.events} events, store holds {applied}"
    print(json.dumps(figures))
    return 1 if timed_out or dead or "mismatch" in figures else 0


if __name__ == "__main__":
    sys.exit(main())
