"""An SQS event-source batch, as Lambda hands it to the function, applied to the shared state.

Lambda polls the queue itself and invokes the function with up to its batch size
of records; it deletes every record the function does not name in
`batchItemFailures` (the mapping has ReportBatchItemFailures on) and leaves the
named ones for SQS to deliver again. So a record may be left out of the answer
only once its effects are committed.

The records are applied in order, in chunks of `chunk` records, each chunk one
transaction through `feedback.apply.apply_batch` (the path of `feedback consume`;
its bodies are SNS envelopes or raw SES JSON, an unparseable one kept as a dead
letter in the same transaction). A chunk's size is what one failure costs: when a
chunk cannot be committed (the store is unreachable, or went away mid-way), it
and every chunk after it are failures, and nothing after it is tried. Trying on
would only wait out a connection timeout per chunk; and stopping at the first
failure is what a FIFO queue needs, whose later records must not overtake it.
Records committed before the failure are not failures: SQS deletes them.

A record SQS delivers again finds its events already logged and changes nothing,
so a chunk that committed although its commit's reply was lost (reported as a
failure) is harmless when it comes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config
from relay.store import Store, StoreError

log = logging.getLogger("ses_relay.feedback.lambda")

CHUNK = 10  # records a transaction: what one SQS receive of `feedback consume` commits together


class NotAnSqsBatch(ValueError):
    """The event is not an SQS event-source batch: the function is wired to something else."""


@dataclass(frozen=True)
class SqsRecord:
    message_id: str
    body: str
    source: str  # the queue and message, for dead letters and logs


@dataclass
class Outcome:
    """What an invocation did: what it committed, and the records SQS must deliver again."""

    applied: BatchResult = field(default_factory=BatchResult)
    committed: int = 0  # records
    failed: list[str] = field(default_factory=list)  # message ids, in the batch's order
    error: str | None = None  # why the first failed record failed
    store_failed: bool = False  # the store could not commit (rather than time running out)

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The function's answer to Lambda (ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed]}


def records_of(event: Any) -> list[SqsRecord]:
    """The records of an SQS event-source batch.

    A record whose body is not text is kept as text (JSON), so that it ends as a dead
    letter rather than an error; an event that is not an SQS batch at all, or a record
    without a messageId (it could not be named as a failure), raises NotAnSqsBatch.
    """
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise NotAnSqsBatch("the event has no Records list: is the function's trigger an SQS queue?")
    out: list[SqsRecord] = []
    for n, record in enumerate(records):
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        if not isinstance(message_id, str) or not message_id:
            raise NotAnSqsBatch(f"record {n} of the event has no messageId: not an SQS record")
        body = record.get("body")
        queue = record.get("eventSourceARN") or "sqs"
        out.append(
            SqsRecord(
                message_id=message_id,
                body=body if isinstance(body, str) else json.dumps(body),
                source=f"lambda:{queue} message {message_id}",
            )
        )
    return out


def chunks(records: Sequence[SqsRecord], size: int) -> list[Sequence[SqsRecord]]:
    if size < 1:
        raise ValueError("a chunk holds at least one record")
    return [records[i : i + size] for i in range(0, len(records), size)]


def failed_from(records: Sequence[SqsRecord], error: str) -> Outcome:
    """Nothing committed: every record is a failure (the store could not be opened)."""
    return Outcome(failed=[r.message_id for r in records], error=error, store_failed=True)


async def apply_records(
    store: Store,
    records: Sequence[SqsRecord],
    config: Config,
    *,
    clock: Callable[[], datetime],
    seconds_left: Callable[[], float | None],
    margin: float,
    chunk: int = CHUNK,
) -> Outcome:
    """Apply `records` chunk by chunk; stop at the first chunk that cannot be committed.

    Before each chunk after the first, `seconds_left()` (None: no limit) must leave at
    least `margin` seconds, the longest a chunk may take (a connection timeout, and
    then some): a function that Lambda stops at its timeout has every record of the
    batch delivered again, those committed included, so the records that would not
    have time are handed back instead. The first chunk is always tried: with less
    time than that from the start, handing everything back would only repeat.
    """
    outcome = Outcome()
    parts = chunks(records, chunk)
    for n, part in enumerate(parts):
        left = seconds_left() if n else None
        if left is not None and left < margin:
            error = f"{left:.1f} s left of the invocation, a chunk may take {margin:.1f} s"
            return _stop(outcome, parts[n:], error)
        try:
            result = await apply_batch(
                store, [Incoming(r.body, r.source) for r in part], config, clock(), count=_in_the_log_line
            )
        except StoreError as exc:
            return _stop(outcome, parts[n:], str(exc), store_failed=True)
        except Exception as exc:  # a fault of this code: what committed stays committed
            first = outcome.committed + 1
            log.exception("applying records %d-%d failed", first, first + len(part) - 1)
            return _stop(outcome, parts[n:], f"{type(exc).__name__}: {exc}")
        outcome.applied.add(result)
        outcome.committed += len(part)
        log.debug("committed records %d-%d of %d", outcome.committed - len(part) + 1, outcome.committed,
                  len(records))  # fmt: skip
    return outcome


def _stop(
    outcome: Outcome, rest: Sequence[Sequence[SqsRecord]], error: str, *, store_failed: bool = False
) -> Outcome:
    outcome.failed = [r.message_id for part in rest for r in part]
    outcome.error = error
    outcome.store_failed = store_failed
    return outcome


def _in_the_log_line(kinds: dict[str, int]) -> None:
    """A Lambda function exports no Prometheus metrics: what it applied is in its log line."""


def summary(outcome: Outcome, total: int) -> str:
    """The invocation's one log line."""
    r = outcome.applied
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.kinds.items())) or "none"
    line = (
        f"committed {outcome.committed} of {total} record(s): {r.events} event(s) ({kinds}), "
        f"{r.duplicates} duplicate(s), {r.dead_letters} dead letter(s), {r.suppressions} suppression "
        f"change(s), {r.notices} notice(s) queued"
    )
    if outcome.failed:
        line += f"; {len(outcome.failed)} left for SQS to deliver again: {outcome.error}"
    return line
