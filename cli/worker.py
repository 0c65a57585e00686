"""`ses-relay worker`: sending, notices, the guard and the feedback consumer, in a process of their own.

serve starts it (cli/serve.py); its services (relay/ops/services.py, process
"worker") are built here from Working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from cli.app import Context, fail, main, open_store, stop_on_signals
from cli.options import common_options
from relay.ops import services
from relay.store import Store, StoreError

if TYPE_CHECKING:
    from relay.sandbox.feed import Feed
    from relay.sending.sender import Sender
    from relay.sending.ses_api import SesApi

from cli.processes import (
    WORKER_NICENESS,
    Loops,
    check_dkim,
    check_notice_routes,
    finish,
    run_loop,
    warn_unalerted_guard,
)  # fmt: skip

log = logging.getLogger("ses_relay")


# -- worker ------------------------------------------------------------------------------


@main.command()
@click.option("--sandbox", is_flag=True, help="Send through the local SES stand-in (as serve --sandbox).")
@click.option("--wake-fd", type=int, hidden=True, help="Pipe from serve: a byte means new mail.")
@click.option("--parent-pid", type=int, hidden=True, help="Exit when this process (serve) is gone.")
@common_options
def worker(ctx: Context, sandbox: bool, wake_fd: int | None, parent_pid: int | None) -> None:
    """Run the sender, the notice deliverer, the reputation guard and the feedback consumer.

    `serve` starts and supervises one for you. Run it yourself only beside a serve on
    the same data dir that cannot start its own; a lock makes sure only one runs.
    """
    check_notice_routes(ctx.config)
    dkim = check_dkim(ctx, load=True)
    if parent_pid is None:  # serve has warned already about the worker it starts
        warn_unalerted_guard(ctx.config)
    try:
        run_loop(_work(ctx, sandbox, dkim, wake_fd, parent_pid))
    except StoreError as exc:
        fail(str(exc))


@dataclass
class Working:
    """What the worker's services share: the sender, because the others wake it."""

    ctx: Context
    store: Store
    stop: asyncio.Event
    sender: Sender
    feed: Feed | None  # the sandbox's event feed, which stands in for SQS
    parent_pid: int | None
    on_accepted: list[Callable[[], None]] = field(default_factory=list)  # woken by serve's pipe


async def sender_service(w: Working) -> Loops:
    """Spool to SES: woken by serve's pipe and by the services below, else every second."""
    return [w.sender]


async def state_shipper(w: Working) -> Loops:
    """With a shared state: the outbox to PostgreSQL, woken by accepts and the sender's outcomes."""
    if not w.store.shared:
        return []
    from relay.ops.shipper import StateShipper

    shipper = StateShipper(w.store, keep=w.ctx.config.metrics.stuck_after)
    w.store.outbox_written = shipper.wake
    w.on_accepted.append(shipper.wake)
    return [shipper]


async def heartbeat_service(w: Working) -> Loops:
    """With a shared state: this host's heartbeat, and its share of the account's send rate."""
    if not w.store.shared:
        return []
    from relay.sending.rate_share import Heartbeat

    return [Heartbeat(w.store, w.sender)]


async def notifier_service(w: Working) -> Loops:
    """Notices to senders: delivered to their route, retried with backoff."""
    from feedback.notices.notifier import Notifier

    return [Notifier(w.store, w.ctx.config, w.ctx.data_dir, wake_sender=w.sender.wake)]


async def guard_service(w: Working) -> Loops:
    """The reputation guard: pauses a class whose rates cross [guard] and alerts."""
    from feedback.notices.notifier import notice_sender
    from relay.hostname import relay_hostname
    from relay.ops.guard import ClassGuard

    config = w.ctx.config
    return [ClassGuard(w.store, config, alert_sender=notice_sender(config, relay_hostname(config)))]


async def parent_watch(w: Working) -> Loops:
    """Under serve, stop when serve is gone."""
    from relay.ops.supervisor import ParentWatch

    return [] if w.parent_pid is None else [ParentWatch(w.parent_pid)]


async def feedback_consumer(w: Working) -> Loops:
    """SES events from the sandbox feed and [feedback] queue_urls, applied to the store."""
    from feedback.ingest.consumer import Consumer, FeedSource

    sources: list[Any] = [] if w.feed is None else [FeedSource(w.feed)]
    sources += sqs_sources(w.ctx, w.ctx.config.feedback.queue_urls)
    idle = 0.0 if w.feed is None else 0.2
    for source in sources:
        log.info("feedback consumer reading %s", source.name)
    return [Consumer(w.store, source, w.ctx.config, idle_seconds=idle) for source in sources]


async def daily_report(w: Working) -> Loops:
    """The daily report, when [report] daily_to names someone to send it to."""
    if not w.ctx.config.report.daily_to:
        return []
    from feedback.reports.daily import DailyReport

    return [DailyReport(w.store, w.ctx.config, w.ctx.data_dir, wake_sender=w.sender.wake)]


WORKER_SERVICES: dict[str, services.Factory[Working]] = {
    "sender": sender_service,
    "state-shipper": state_shipper,


    "heartbeat": heartbeat_service,
    "notifier": notifier_service,
    "guard": guard_service,
    "parent-watch": parent_watch,
    "feedback-consumer": feedback_consumer,
    "daily-report": daily_report,
}


def sqs_sources(ctx: Context, queue_urls: tuple[str, ...]) -> list[Any]:
    from feedback.ingest.consumer import SqsSource

    return [SqsSource(url, region=ctx.config.ses.region) for url in queue_urls]  # SQS: botocore's endpoint


def _ses(ctx: Context, sandbox: bool) -> tuple[SesApi, Feed | None]:
    """SES itself, or the sandbox's stand-in and the feed its events go to."""
    if sandbox:
        from relay.sandbox.feed import Feed
        from relay.sandbox.stand_in import SandboxSes

        feed = Feed(ctx.data_dir / "sandbox" / "feed")
        return SandboxSes(ctx.data_dir / "sandbox", feed), feed
    ses = ctx.config.ses
    if ses.api == "v1":  # SendRawEmail signed and posted by hand; GetSendQuota through boto3
        from relay.sending.ses_lean import LeanSes

        lean = LeanSes(region=ses.region, endpoint_url=ses.endpoint_url or None, concurrency=ses.concurrency)
        return lean, None
    from relay.sending.ses_client import BotoSes

    client = BotoSes(
        region=ses.region, endpoint_url=ses.endpoint_url or None, api=ses.api, concurrency=ses.concurrency
    )
    return client, None


async def _work(ctx: Context, sandbox: bool, dkim: Any, wake_fd: int | None, parent_pid: int | None) -> None:
    from relay.ops.supervisor import hold_worker_lock
    from relay.sending.sender import Sender

    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    if parent_pid is not None:
        # Under a burst the intake comes first: the spool absorbs it and the worker catches
        # up after, as a queue should. Lower CPU priority, not fewer workers.
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)
    lock = await hold_worker_lock(ctx.data_dir / "worker.lock")
    try:
        # fsync off: see Store.open (a crash may repeat a send, never lose one)
        async with open_store(ctx, fsync_every_commit=False) as store:
            ses, feed = _ses(ctx, sandbox)
            sender = Sender(store, ses, ctx.config, dkim=dkim)
            await sender.configure_rate()
            w = Working(ctx, store, asyncio.Event(), sender, feed, parent_pid, [sender.wake])
            loops = await services.start("worker", WORKER_SERVICES, w)
            stop_on_signals(w.stop)
            if wake_fd is not None:
                asyncio.get_running_loop().add_reader(wake_fd, _drain_wakeups, wake_fd, w.on_accepted)
            tasks = [asyncio.create_task(loop.run(w.stop)) for loop in loops]
            log.info("worker running (pid %d)", os.getpid())
            try:
                await w.stop.wait()
            finally:
                log.info("worker stopping")
                await finish(w.stop, tasks, grace=30)
    finally:
        lock.close()


def _drain_wakeups(fd: int, wakes: list[Callable[[], None]]) -> None:
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return
    if data:
        for wake in wakes:
            wake()
    else:  # serve closed its end: it is going away, and the parent watch will stop us
        asyncio.get_running_loop().remove_reader(fd)
