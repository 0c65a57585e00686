"""The feedback consumer: queue messages in, effects committed, then deleted.

A source is anything with `receive()` and `delete()` in SQS's at-least-once style:
real SQS queues (long-polled, 20 s, batches of 10) or the sandbox's local feed.
Each received batch is applied in one transaction (feedback.apply); only after the
commit are its messages deleted. A store failure leaves them in the queue for SQS
to redeliver (and its redrive policy to catch), while unparseable bodies are kept
as dead letters and deleted so that they cannot block the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config
from relay.loop import Loop
from relay.sandbox.feed import Feed, FeedItem
from relay.store import Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.feedback")

SQS_WAIT_SECONDS = 20
SQS_BATCH = 10
RETRY_PAUSE_SECONDS = 5.0


@dataclass(frozen=True)
class Received:
    body: str
    handle: Any  # what `delete` needs: an SQS receipt handle or a FeedItem


class Source(Protocol):
    name: str

    def receive(self, wait_seconds: int) -> list[Received]: ...

    def delete(self, messages: Sequence[Received]) -> None: ...


class SqsSource:
    """One SQS queue; boto3 calls are blocking, so the consumer runs them in threads.

    The endpoint is botocore's to resolve (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL, the
    shared config file, else AWS's): `[ses] endpoint_url` is for SES alone.
    """

    def __init__(self, queue_url: str, *, region: str) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.queue_url = queue_url
        self.name = f"sqs:{queue_url}"
        self._client = boto3.session.Session().client(
            "sqs",
            region_name=_region_of(queue_url) or region,
            config=BotoConfig(read_timeout=SQS_WAIT_SECONDS + 10, retries={"mode": "standard"}),
        )

    def receive(self, wait_seconds: int) -> list[Received]:
        reply = self._client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=SQS_BATCH, WaitTimeSeconds=wait_seconds
        )
        return [Received(m["Body"], m["ReceiptHandle"]) for m in reply.get("Messages", [])]

    def delete(self, messages: Sequence[Received]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m.handle} for i, m in enumerate(messages)]
        reply = self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in reply.get("Failed", []):
            # The effects are committed; a redelivery will be recognised as a duplicate.
            log.warning("could not delete message from %s: %s", self.queue_url, failed.get("Message"))


class FeedSource:
    """The sandbox's durable local feed (relay.sandbox.feed)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.name = f"feed:{feed.path}"

    def receive(self, wait_seconds: int) -> list[Received]:
        return [Received(item.body, item) for item in self.feed.receive(SQS_BATCH)]

    def delete(self, messages: Sequence[Received]) -> None:
        for message in messages:
            item: FeedItem = message.handle
            self.feed.delete(item)


def _region_of(queue_url: str) -> str | None:
    # https://sqs.<region>.amazonaws.com/<account>/<name>
    host = queue_url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) >= 4 and parts[0] == "sqs" and parts[-2] == "amazonaws":
        return parts[1]
    return None


async def consume_once(
    store: Store, source: Source, config: Config, *, wait_seconds: int
) -> BatchResult | None:
    """Receive one batch and apply it; None when the source had nothing."""
    messages = await asyncio.to_thread(source.receive, wait_seconds)
    if not messages:
        return None
    batch = [Incoming(m.body, source.name) for m in messages]
    result = await apply_batch(store, batch, config, utcnow())
    await asyncio.to_thread(source.delete, messages)
    return result


class Consumer(Loop):
    """Applies `source`'s batches as they come: the source's long poll is the wait
    between rounds; after an error it pauses RETRY_PAUSE_SECONDS. With `drain` it reads
    without waiting, stops when the source is empty, and raises what a round raises."""

    def __init__(
        self,
        store: Store,
        source: Source,
        config: Config,
        *,
        drain: bool = False,
        wait_seconds: int = SQS_WAIT_SECONDS,
        idle_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.store = store
        self.source = source
        self.config = config
        self.drain = drain
        self.wait_seconds = 0 if drain else wait_seconds
        self.idle_seconds = idle_seconds
        self.total = BatchResult()

    async def tick(self) -> float | None:
        name = self.source.name
        try:
            result = await consume_once(self.store, self.source, self.config, wait_seconds=self.wait_seconds)
        except StoreError as exc:
            log.error("%s: store unavailable, leaving the batch queued: %s", name, exc)
            if self.drain:
                raise
            return RETRY_PAUSE_SECONDS
        except Exception as exc:  # boto/network trouble: log, back off, go on
            log.error("%s: %s", name, exc)
            if self.drain:
                raise
            return RETRY_PAUSE_SECONDS
        if result is None:
            return None if self.drain else self.idle_seconds
        self.total.add(result)
        log.info(
            "%s: applied %d event(s), %d duplicate(s), %d dead letter(s)",
            name, result.events, result.duplicates, result.dead_letters,
        )  # fmt: skip
        return 0.0


async def consume(
    store: Store,
    source: Source,
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    drain: bool = False,
    wait_seconds: int = SQS_WAIT_SECONDS,
    idle_seconds: float = 0.0,
) -> BatchResult:
    """Consume `source` until `stop` is set (or, with drain, until it is empty)."""
    consumer = Consumer(
        store, source, config, drain=drain, wait_seconds=wait_seconds, idle_seconds=idle_seconds
    )
    await consumer.run(stop or asyncio.Event())
    return consumer.total
