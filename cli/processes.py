"""`serve` and `worker`: the two long-running processes and the services each runs.

serve is the SMTP intake; sending and feedback run in a worker process of its own,
as Postfix keeps smtpd apart from its delivery agents: boto3's CPU cost and the GIL
then never slow the intake, and the intake needs no AWS credentials.

Each service of the service table (relay/ops/services.py) is built by one small
function of what its process shares (Serving or Working) that returns its loops;
SERVE_SERVICES and WORKER_SERVICES map the table's names to them, and
`services.start` builds them in the table's order.
Imports of the parts stay inside functions: prometheus_client must not be loaded
before serve has chosen where its multiprocess counters go.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.app import Context, fail, main, open_store, stop_on_signals
from cli.options import common_options
from relay import config as configuration
from relay.config import Config, ConfigError
from relay.loop import Loop
from relay.ops import services
from relay.store import Store, StoreError

if TYPE_CHECKING:
    from relay.ops.guard import ClassGuard
    from relay.ops.monitor import Monitor
    from relay.ops.state_mirror import StateMirror
    from relay.ops.supervisor import WorkerSupervisor
    from relay.sandbox.feed import Feed
    from relay.sending.sender import Sender
    from relay.sending.ses_api import SesApi

log = logging.getLogger("ses_relay")
WORKER_NICENESS = 10
Loops = list[Loop]


# -- the event loop both processes run on ----------------------------------------------------


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)` on uvloop's event loop when uvloop is installed (Linux), else
    asyncio's: uvloop's transports and scheduling cost the intake about a tenth less CPU
    a message, and signals, subprocesses and threads work the same on both."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if sys.platform == "linux":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


# -- checks made at start, before anything binds or sends ------------------------------------


def check_notice_routes(config: Config) -> None:
    """Bad notice routes are configuration errors: found at start, exit 2, key named."""
    from feedback.notices.mailboxes import parse_route

    for key, text in [("notices.default", config.notices.default)] + [
        (f"notices.routes.{domain}", route) for domain, route in config.notices.routes.items()
    ]:
        try:
            parse_route(text)
        except ValueError as exc:
            fail(f"configuration error: {key}: {exc}", 2)


def _check_dkim(ctx: Context, *, load: bool = False) -> Any:
    """DKIM keys must be readable PEM keys: found at start (exit 2), not at the first message.
    serve checks their shape only; the worker (`load`) loads them as it will sign with them."""
    from relay.sending.dkim import DkimError, DkimKeys

    try:
        keys = DkimKeys({d: (c.selector, c.key_file) for d, c in ctx.config.dkim.items()}, ctx.data_dir)
        if load:
            from relay.sending.dkim_sign import load_keys

            load_keys(keys)
    except DkimError as exc:
        fail(f"configuration error: {exc}", 2)
    return keys


def _warn_unalerted_guard(config: Config) -> None:
    from relay.ops.guard import unalerted

    warning = unalerted(config)
    if warning:
        log.warning("%s", warning)


def _multiprocess_metrics(data_dir: Path) -> None:
    """serve and its worker count into files under the data dir; /metrics sums them.

    Must run before anything imports prometheus_client (it reads this at import).
    """
    import shutil

    directory = data_dir / "run" / "metrics"
    shutil.rmtree(directory, ignore_errors=True)  # counters restart with the process, as usual
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@dataclass(frozen=True)
class Access:
    """What every listener shares: the TLS context, the AUTH checker, the per-client counters."""

    tls_context: Any
    authenticator: Any
    client_limits: Any


def _access(config: Config, data_dir: Path) -> Access:
    """Listener checks (again, after --listen), TLS and users: any problem exits 2 before binding."""
    from relay.intake.auth import Authenticator, UserSource
    from relay.intake.limits import ClientLimits
    from relay.intake.tls import server_context
    from relay.intake.users import UsersFileError, users_path

    auth = config.auth
    try:
        configuration.check_listeners(config)
        needs_tls = any(listener.tls != "none" for listener in config.listeners)
        tls_context = server_context(config.tls) if needs_tls else None
        source = UserSource(users_path(auth.users_file, data_dir), config.classes)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", 2)
    except UsersFileError as exc:
        fail(f"configuration error: auth.users_file: {exc}", 2)
    authenticator = Authenticator(
        source,
        max_failures=auth.max_failures,
        max_failures_per_user=auth.max_failures_per_user,
        window=auth.failure_window.total_seconds(),
        lockout=auth.lockout.total_seconds(),
        failure_delay=auth.failure_delay.total_seconds(),
    )
    limits = ClientLimits.from_limits(
        config.limits.connections_per_ip, config.limits.messages_per_minute_per_ip
    )
    for listener in config.listeners:
        if listener.require_auth and not source.users():
            log.warning("listener %s requires AUTH but %s has no users yet", listener.listen, source.path)
    return Access(tls_context, authenticator, limits)


async def _finish(stop: asyncio.Event, tasks: list[asyncio.Task[Any]], *, grace: float) -> None:
    """Stop the loops and give them `grace` seconds to finish the work in hand."""
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=grace)


# -- serve -------------------------------------------------------------------------------


@main.command()
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Listen on this address only, replacing [[listeners]] (default 127.0.0.1:2525).",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="Replace SES with a local stand-in (SES mailbox simulator rules); nothing leaves the machine.",
)
@common_options
def serve(ctx: Context, listen: str | None, sandbox: bool) -> None:
    """Run the SMTP intake (and its worker process: sender, notices, feedback) until interrupted."""
    _multiprocess_metrics(ctx.data_dir)
    config = ctx.config
    if listen:
        try:
            listener = config.listeners[0].model_copy(update={"listen": listen})
            configuration.parse_hostport(listen)
        except ValueError as exc:
            fail(f"--listen: {exc}", 2)
        config = config.model_copy(update={"listeners": (listener,)})
    access = _access(config, ctx.data_dir)
    check_notice_routes(config)
    _check_dkim(ctx)
    _warn_unalerted_guard(config)
    try:
        run_loop(_serve(dataclasses.replace(ctx, config=config), sandbox, access))
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen: {exc}")


@dataclass
class Serving:
    """What serve's services share; `servers` collects what they bind, to close at the end."""

    ctx: Context
    store: Store
    stop: asyncio.Event
    access: Access
    guard: ClassGuard
    supervisor: WorkerSupervisor
    mirror: StateMirror | None = None  # with a shared state: the copy RCPT and DATA are checked against
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    monitor: Monitor | None = None


async def metrics_endpoint(s: Serving) -> Loops:
    """/metrics, /healthz, /readyz on serve's loop, when [metrics] listen is set."""
    listen = s.ctx.config.metrics.listen
    if listen:
        from relay.ops.monitor import Monitor

        s.monitor = Monitor(s.store, s.ctx.config, mirror=s.mirror)
        s.servers.append(await s.monitor.start(listen))
        click.echo(f"ses-relay metrics on http://{listen}/metrics (and /healthz, /readyz)")
    return []


async def smtp_intake(s: Serving) -> Loops:
    """One SMTP server per [[listeners]] entry; accepted mail wakes the worker."""
    from relay.intake.handler import IntakeHandler
    from relay.intake.smtp import start_listener

    for listener in s.ctx.config.listeners:
        handler = IntakeHandler(
            s.store, s.ctx.config, listener, on_accepted=s.supervisor.wake, paused=s.guard.paused
        )
        handler.client_limits, handler.authenticator = s.access.client_limits, s.access.authenticator
        s.servers.append(await start_listener(handler, tls_context=s.access.tls_context))
        log.info(
            "listener %s: tls=%s require_auth=%s allow_networks=%s",
            listener.listen,
            listener.tls,
            listener.require_auth,
            ",".join(listener.allow_networks) or "(none)",
        )
        click.echo(f"ses-relay listening on {listener.listen} (data dir: {s.ctx.data_dir.resolve()})")
    return []


async def worker_process(s: Serving) -> Loops:
    """The worker process, started, restarted and woken by serve."""
    return [s.supervisor]


async def guard_view(s: Serving) -> Loops:
    """The class pause states the intake reads (it never pauses or alerts itself)."""
    return [s.guard]


async def state_mirror(s: Serving) -> Loops:
    """With a shared state, the local copy of its suppressions and class pauses (prepared already)."""
    return [] if s.mirror is None else [s.mirror]


SERVE_SERVICES: dict[str, services.Factory[Serving]] = {
    "metrics": metrics_endpoint,
    "state-mirror": state_mirror,
    "guard-view": guard_view,
    "worker-supervisor": worker_process,
    "smtp-intake": smtp_intake,
}


async def _serve(ctx: Context, sandbox: bool, access: Access) -> None:
    from relay.ops.guard import ClassGuard
    from relay.ops.supervisor import WorkerSupervisor

    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    # A shared state that does not answer is no reason to stay down when a mirror of it
    # is here: the intake answers from the mirror (StateMirror.prepare decides).
    async with open_store(ctx, state_required=False) as store:
        mirror = await _mirror(store, ctx.config)
        guard = ClassGuard(store, ctx.config, alert_sender="", checks=False)  # the intake only reads
        await guard.refresh()
        if mirror is not None:
            mirror.on_classes = guard.wake  # a pause made on another host: answer DATA with it at once
        supervisor = WorkerSupervisor(_worker_command(ctx, sandbox))
        s = Serving(ctx, store, asyncio.Event(), access, guard, supervisor, mirror)
        loops = await services.start("serve", SERVE_SERVICES, s)
        if sandbox:
            copies = ctx.data_dir.resolve() / "sandbox"
            click.echo(f"SANDBOX: nothing leaves this machine; delivered copies in {copies}")
        sys.stdout.flush()
        stop_on_signals(s.stop)
        tasks = [asyncio.create_task(loop.run(s.stop)) for loop in loops]
        if s.monitor is not None:
            s.monitor.ready = True
        try:
            await s.stop.wait()
        finally:
            log.info("shutting down")
            if s.monitor is not None:
                s.monitor.ready = False
            for server in s.servers:
                server.close()
            for server in s.servers:
                await server.wait_closed()
            await _finish(s.stop, tasks, grace=40)


async def _mirror(store: Store, config: Config) -> StateMirror | None:
    """With a shared state: its mirror, brought up to date before the listeners open."""
    if not store.shared:
        return None
    from relay.ops.state_mirror import StateMirror

    mirror = StateMirror(store, config.state)
    await mirror.prepare()  # StoreError: no mirror here and no shared state to copy it from
    return mirror


def _worker_command(ctx: Context, sandbox: bool) -> list[str]:
    cmd = [sys.executable, "-m", "cli", "worker", "--data-dir", str(ctx.data_dir)]
    cmd += ["--log-level", ctx.log_level, "--log-format", ctx.log_format]
    if ctx.config_file is not None:
        cmd += ["--config", str(ctx.config_file)]
    if sandbox:
        cmd.append("--sandbox")
    return cmd


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
    dkim = _check_dkim(ctx, load=True)
    if parent_pid is None:  # serve has warned already about the worker it starts
        _warn_unalerted_guard(ctx.config)
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
                await _finish(w.stop, tasks, grace=30)
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
