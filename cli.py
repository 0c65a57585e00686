"""ses-relay's command line: the one place that wires the parts together.

Verbs are nouns then verbs (`ses-relay suppression list`). Every command takes
--config and --data-dir (also from SES_RELAY_CONFIG / SES_RELAY_DATA_DIR); a bad
configuration exits with status 2 and names the key; every listing has --json.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from relay import config as configuration
from relay import logsetup
from relay.addresses import AddressError, normalise
from relay.config import Config, ConfigError
from relay.store import Store, StoreError
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import maybe_text, to_text, utcnow
from relay.vocabulary import Status

log = logging.getLogger("ses_relay")
T = TypeVar("T")
STORE_FILE = "relay.db"
WORKER_NICENESS = 10


@dataclass(frozen=True)
class Context:
    config: Config
    data_dir: Path
    config_file: Path | None = None  # where `config` came from, for the worker process
    log_level: str = "info"
    log_format: logsetup.LogFormat = "text"

    @property
    def store_path(self) -> Path:
        return self.data_dir / STORE_FILE


def fail(message: str, status: int = 1) -> None:
    click.echo(f"ses-relay: {message}", err=True)
    sys.exit(status)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config/--data-dir/--log-level on every command, resolved into a Context."""

    @click.option(
        "--config",
        "config_path",
        envvar="SES_RELAY_CONFIG",
        type=click.Path(dir_okay=False),
        help="TOML configuration file [env SES_RELAY_CONFIG; default ./ses-relay.toml when present].",
    )
    @click.option(
        "--data-dir",
        envvar="SES_RELAY_DATA_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=configuration.DEFAULT_DATA_DIR,
        show_default=True,
        help="Holds the store, DKIM keys, sandbox and mailboxes [env SES_RELAY_DATA_DIR].",
    )
    @click.option(
        "--log-level",
        envvar="SES_RELAY_LOG_LEVEL",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        show_default=True,
        help="How much to log (to standard error) [env SES_RELAY_LOG_LEVEL].",
    )
    @click.option(
        "--log-format",
        envvar="SES_RELAY_LOG_FORMAT",
        type=click.Choice(logsetup.LOG_FORMATS),
        default="text",
        show_default=True,
        help="text, or json: one JSON object a line for log shippers [env SES_RELAY_LOG_FORMAT].",
    )
    @functools.wraps(func)
    def wrapper(
        config_path: str | None, data_dir: Path, log_level: str, log_format: logsetup.LogFormat, **kwargs: Any
    ) -> Any:
        config_path = _before_subcommand("config_path", config_path)
        data_dir = _before_subcommand("data_dir", data_dir)
        log_level = _before_subcommand("log_level", log_level)
        log_format = _before_subcommand("log_format", log_format)
        logsetup.configure(log_level, log_format)
        located = configuration.locate(config_path)
        try:
            config = configuration.load(located)
        except ConfigError as exc:
            fail(f"configuration error: {exc}", 2)
        return func(Context(config, data_dir, located, log_level, log_format), **kwargs)

    return wrapper


def _before_subcommand(name: str, value: T) -> T:
    """The value of a common option, wherever it was given.

    `ses-relay --data-dir D suppression list` and `ses-relay suppression list
    --data-dir D` mean the same; given in both places, the one after the subcommand
    wins (it is the more specific). Either beats the environment and the default.
    """
    ctx = click.get_current_context()
    if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
        return value
    outer = ctx.find_root().params.get(name)
    return value if outer is None else outer


def run(coro_fn: Callable[[Context], Awaitable[T]]) -> Callable[[Context], T]:
    return lambda ctx: asyncio.run(coro_fn(ctx))


def require_store(ctx: Context) -> None:
    """Commands that only read answer from an existing store, never from a new empty one.

    Pointed at the wrong data dir, "no suppressions" would look like an answer; say
    where we looked instead, and create nothing there.
    """
    if ctx.store_path.is_file():
        return
    data_dir = ctx.data_dir.resolve()
    where = (
        f"data dir {data_dir} does not exist"
        if not data_dir.exists()
        else f"data dir {data_dir} has no store ({STORE_FILE})"
    )
    fail(
        f"{where}. Point this command at the relay's data dir with --data-dir DIR or "
        "SES_RELAY_DATA_DIR=DIR (serve, worker and the commands that write create it)",
        2,
    )


async def open_store(ctx: Context, *, fsync_every_commit: bool = True, create: bool = True) -> Store:
    """The store in the data dir; `create=False` (read commands) fails if there is none yet."""
    if not create:
        require_store(ctx)
    try:
        return await Store.open(ctx.store_path, fsync_every_commit=fsync_every_commit)
    except StoreError as exc:
        fail(str(exc))
        raise  # unreachable; fail() exits


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ses-relay")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML configuration file, for any command [env SES_RELAY_CONFIG].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The relay's data dir, for any command [env SES_RELAY_DATA_DIR; default ./ses-relay-data].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="How much to log, for any command [env SES_RELAY_LOG_LEVEL; default info].",
)
@click.option(
    "--log-format",
    type=click.Choice(logsetup.LOG_FORMATS),
    help="text, or json (one object a line), for any command [env SES_RELAY_LOG_FORMAT; default text].",
)
def main(
    config_path: str | None, data_dir: Path | None, log_level: str | None, log_format: str | None
) -> None:
    """ses-relay: an SMTP relay in front of Amazon SES.

    Applications send by SMTP; ses-relay refuses suppressed recipients, sends
    the rest through SES with the configuration set of the message's class, and
    keeps every accepted message until it is sent or its sender is told why not.

    --config, --data-dir, --log-level and --log-format go before the command or
    after it; given in both places, the one after it wins.
    """


# -- serve -------------------------------------------------------------------


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
        asyncio.run(_serve(dataclasses.replace(ctx, config=config), sandbox, access))
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen: {exc}")


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


def _check_dkim(ctx: Context) -> Any:
    """Configured DKIM keys must be readable: found at start (exit 2), not at the first message."""
    from relay.sending.dkim import DkimError, DkimKeys

    try:
        return DkimKeys({d: (c.selector, c.key_file) for d, c in ctx.config.dkim.items()}, ctx.data_dir)
    except DkimError as exc:
        fail(f"configuration error: {exc}", 2)


@dataclass
class ServeParts:
    """What serve's services share; the factories below build each service from it."""

    ctx: Context
    sandbox: bool
    access: Access | None
    store: Store
    guard: Any  # relay.ops.guard.ClassGuard, the intake's view of the pause states
    supervisor: Any  # relay.ops.supervisor.WorkerSupervisor
    servers: list[Any] = dataclasses.field(default_factory=list)  # closed first at shutdown
    monitor: Any = None


async def _guard_view(parts: ServeParts) -> list[Any]:
    return [parts.guard]


async def _worker_supervisor(parts: ServeParts) -> list[Any]:
    return [parts.supervisor]


async def _metrics(parts: ServeParts) -> list[Any]:
    """/metrics, /healthz, /readyz on this loop (relay/ops/monitor.py), when configured."""
    config = parts.ctx.config
    if config.metrics.listen:
        from relay.ops.monitor import Monitor

        parts.monitor = Monitor(parts.store, config)
        parts.servers.append(await parts.monitor.start(config.metrics.listen))
        click.echo(f"ses-relay metrics on http://{config.metrics.listen}/metrics (and /healthz, /readyz)")
    return []


async def _smtp_intake(parts: ServeParts) -> list[Any]:
    from relay.intake.handler import IntakeHandler, start_listener

    ctx, config, access = parts.ctx, parts.ctx.config, parts.access
    for listener in config.listeners:
        handler = IntakeHandler(
            parts.store, config, listener, on_accepted=parts.supervisor.wake, paused=parts.guard.paused
        )
        if access is not None:
            handler.client_limits, handler.authenticator = access.client_limits, access.authenticator
        tls_context = access.tls_context if access else None
        parts.servers.append(await start_listener(handler, tls_context=tls_context))
        log.info(
            "listener %s: tls=%s require_auth=%s allow_networks=%s",
            listener.listen,
            listener.tls,
            listener.require_auth,
            ",".join(listener.allow_networks) or "(none)",
        )
        click.echo(f"ses-relay listening on {listener.listen} (data dir: {ctx.data_dir.resolve()})")
    return []


SERVE_SERVICES = {
    "guard-view": _guard_view,
    "worker-supervisor": _worker_supervisor,
    "metrics": _metrics,
    "smtp-intake": _smtp_intake,
}


async def _serve(ctx: Context, sandbox: bool, access: Access | None = None) -> None:
    """The SMTP intake. Sending and feedback run in a worker process of their own (see
    `worker`), as Postfix keeps smtpd apart from its delivery agents: boto3's CPU cost
    and the GIL then never slow the intake, and the intake needs no AWS credentials."""
    from relay.ops import services
    from relay.ops.guard import ClassGuard
    from relay.ops.supervisor import WorkerSupervisor

    config = ctx.config
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(ctx)
    guard = ClassGuard(store, config, alert_sender="", checks=False)  # the intake only reads the states
    await guard.refresh()
    parts = ServeParts(ctx, sandbox, access, store, guard, WorkerSupervisor(_worker_command(ctx, sandbox)))
    loops = await services.start("serve", SERVE_SERVICES, parts)
    if sandbox:
        click.echo(
            f"SANDBOX: nothing leaves this machine; delivered copies in {ctx.data_dir.resolve() / 'sandbox'}"
        )
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(service.run(stop)) for service in loops]
    if parts.monitor is not None:
        parts.monitor.ready = True
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if parts.monitor is not None:
            parts.monitor.ready = False
        for server in parts.servers:
            server.close()
        for server in parts.servers:
            await server.wait_closed()
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=40)
        await store.close()


def _worker_command(ctx: Context, sandbox: bool) -> list[str]:
    cmd = [sys.executable, "-m", "cli", "worker", "--data-dir", str(ctx.data_dir)]
    cmd += ["--log-level", ctx.log_level, "--log-format", ctx.log_format]
    if ctx.config_file is not None:
        cmd += ["--config", str(ctx.config_file)]
    if sandbox:
        cmd.append("--sandbox")
    return cmd


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
    dkim = _check_dkim(ctx)
    if parent_pid is None:  # serve has warned already about the worker it starts
        _warn_unalerted_guard(ctx.config)
    try:
        asyncio.run(_work(ctx, sandbox, dkim, wake_fd, parent_pid))
    except StoreError as exc:
        fail(str(exc))


@dataclass
class WorkerParts:
    """What the worker's services share; the factories below build each service from it."""

    ctx: Context
    sandbox: bool
    store: Store
    sender: Any  # relay.sending.sender.Sender: the others wake it when they spool mail
    feed: Any  # relay.sandbox.feed.Feed under --sandbox, else None
    parent_pid: int | None


async def _sender(parts: WorkerParts) -> list[Any]:
    return [parts.sender]


async def _notifier(parts: WorkerParts) -> list[Any]:
    from feedback.notices.notifier import Notifier

    return [Notifier(parts.store, parts.ctx.config, parts.ctx.data_dir, wake_sender=parts.sender.wake)]


async def _guard(parts: WorkerParts) -> list[Any]:
    from feedback.notices.notifier import notice_sender
    from relay.hostname import relay_hostname
    from relay.ops.guard import ClassGuard

    config = parts.ctx.config
    return [ClassGuard(parts.store, config, alert_sender=notice_sender(config, relay_hostname(config)))]


async def _feedback_consumer(parts: WorkerParts) -> list[Any]:
    """One consumer per source: the sandbox's feed, and each of `[feedback] queue_urls`."""
    from feedback.ingest.consumer import Consumer, FeedSource

    sources: list[Any] = [FeedSource(parts.feed)] if parts.feed is not None else []
    sources.extend(_sqs_sources(parts.ctx, parts.ctx.config.feedback.queue_urls))
    idle = 0.2 if parts.sandbox else 0.0
    for source in sources:
        log.info("feedback consumer reading %s", source.name)
    return [Consumer(parts.store, source, parts.ctx.config, idle_seconds=idle) for source in sources]


async def _daily_report(parts: WorkerParts) -> list[Any]:
    if not parts.ctx.config.report.daily_to:
        return []
    from feedback.reports.daily import DailyReport

    return [DailyReport(parts.store, parts.ctx.config, parts.ctx.data_dir, wake_sender=parts.sender.wake)]


async def _parent_watch(parts: WorkerParts) -> list[Any]:
    from relay.ops.supervisor import ParentWatch

    return [ParentWatch(parts.parent_pid)] if parts.parent_pid is not None else []


WORKER_SERVICES = {
    "sender": _sender,
    "notifier": _notifier,
    "guard": _guard,
    "feedback-consumer": _feedback_consumer,
    "daily-report": _daily_report,
    "parent-watch": _parent_watch,
}


async def _work(ctx: Context, sandbox: bool, dkim: Any, wake_fd: int | None, parent_pid: int | None) -> None:
    from relay.ops import services
    from relay.ops.supervisor import hold_worker_lock
    from relay.sending.sender import Sender
    from relay.sending.ses_api import SesApi

    config = ctx.config
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    if parent_pid is not None:
        # Under a burst the intake comes first: the spool absorbs it and the worker catches
        # up after, as a queue should. Lower CPU priority, not fewer workers.
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)
    lock = await hold_worker_lock(ctx.data_dir / "worker.lock")
    store = await open_store(ctx, fsync_every_commit=False)  # see Store.open: duplicates, never losses
    ses: SesApi
    feed = None
    if sandbox:
        from relay.sandbox.feed import Feed
        from relay.sandbox.stand_in import SandboxSes

        feed = Feed(ctx.data_dir / "sandbox" / "feed")
        ses = SandboxSes(ctx.data_dir / "sandbox", feed)
    else:
        from relay.sending.ses_client import BotoSes

        ses = BotoSes(
            region=config.ses.region,
            endpoint_url=config.ses.endpoint_url or None,
            api=config.ses.api,
            concurrency=config.ses.concurrency,
        )
    sender = Sender(store, ses, config, dkim=dkim)
    await sender.configure_rate()
    parts = WorkerParts(ctx, sandbox, store, sender, feed, parent_pid)
    loops = await services.start("worker", WORKER_SERVICES, parts)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if wake_fd is not None:
        loop.add_reader(wake_fd, _drain_wakeups, wake_fd, sender.wake)
    tasks = [asyncio.create_task(service.run(stop)) for service in loops]
    log.info("worker running (pid %d)", os.getpid())
    try:
        await stop.wait()
    finally:
        log.info("worker stopping")
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        await store.close()
        lock.close()


def _drain_wakeups(fd: int, wake: Callable[[], None]) -> None:
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return
    if data:
        wake()
    else:  # serve closed its end: it is going away, and watch_parent will stop us
        asyncio.get_running_loop().remove_reader(fd)


# -- suppression ---------------------------------------------------------------


@main.group("suppression")
def suppression_group() -> None:
    """List, inspect, add and clear suppressed addresses."""


def _address(value: str) -> str:
    try:
        return normalise(value)
    except AddressError as exc:
        fail(str(exc), 2)
        raise


def _class_option(ctx: Context, value: str | None) -> str | None:
    if value is None or value == ALL or value in ctx.config.classes:
        return value
    fail(f"--class: unknown class {value!r}; configured: {', '.join(sorted(ctx.config.classes))} or '*'", 2)
    return None


def suppression_json(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "class": entry.klass,
        "level": str(entry.level),
        "cause": str(entry.cause),
        "reason": entry.reason,
        "expires_at": maybe_text(entry.expires_at),
        "created_at": to_text(entry.created_at),
        "updated_at": to_text(entry.updated_at),
        "feedback_id": entry.feedback_id,
        "ses_message_id": entry.ses_message_id,
        "refused_count": entry.refused_count,
        "last_refused_at": maybe_text(entry.last_refused_at),
    }


@suppression_group.command("add")
@click.argument("address")
@click.option("--class", "klass", default=ALL, show_default=True, help="Class to suppress in ('*' = all).")
@click.option("--reason", default="added by admin", show_default=True, help="Why; shown in RCPT replies.")
@click.option("--until", "until", help="Expire at this ISO date/time (UTC unless an offset is given).")
@click.option("--days", type=click.IntRange(min=1), help="Expire after this many days.")
@click.option(
    "--level",
    type=click.Choice([str(lvl) for lvl in Level]),
    default="hard",
    show_default=True,
    help="Suppression level; an existing stronger level is kept.",
)
@common_options
def suppression_add(
    ctx: Context, address: str, klass: str, reason: str, until: str | None, days: int | None, level: str
) -> None:
    """Suppress ADDRESS (in all classes unless --class); indefinite unless --until/--days."""
    addr = _address(address)
    _class_option(ctx, klass)
    if until and days:
        fail("give --until or --days, not both", 2)
    now = utcnow()
    expires: datetime | None = None
    if until:
        try:
            expires = datetime.fromisoformat(until)
        except ValueError:
            fail(f"--until: {until!r} is not an ISO date or date-time", 2)
        expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
        if expires <= now:
            fail(f"--until: {until} is in the past", 2)
    elif days:
        expires = now + timedelta(days=days)
    entry = Suppression(
        address=addr,
        klass=klass,
        level=Level.parse(level),
        cause=Cause.MANUAL,
        reason=reason,
        created_at=now,
        updated_at=now,
        expires_at=expires,
    )

    async def go(ctx: Context) -> Suppression:
        store = await open_store(ctx)
        try:
            return await store.merge_suppression(entry, actor=_actor(), action="add")
        finally:
            await store.close()

    merged = run(go)(ctx)
    until_text = "indefinitely" if merged.expires_at is None else f"until {to_text(merged.expires_at)}"
    click.echo(f"suppressed {merged.address} in class {merged.klass} ({merged.level}) {until_text}")


@suppression_group.command("list")
@click.option("--class", "klass", help="Only this class ('*' for the all-classes entries).")
@click.option("--level", type=click.Choice([str(lvl) for lvl in Level]), help="Only this level.")
@click.option("--all", "include_expired", is_flag=True, help="Include expired entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def suppression_list(
    ctx: Context, klass: str | None, level: str | None, include_expired: bool, as_json: bool
) -> None:
    """List active suppressions."""
    _class_option(ctx, klass)

    async def go(ctx: Context) -> list[Suppression]:
        store = await open_store(ctx, create=False)
        try:
            return await store.list_suppressions(
                now=utcnow(),
                klass=klass,
                level=Level.parse(level) if level else None,
                include_expired=include_expired,
            )
        finally:
            await store.close()

    entries = run(go)(ctx)
    if as_json:
        emit_json(
            [
                {k: v for k, v in suppression_json(e).items() if k not in ("updated_at",)}
                for e in entries
            ]
        )
        return
    if not entries:
        click.echo("no suppressions")
        return
    for e in entries:
        expires = "never" if e.expires_at is None else to_text(e.expires_at)
        click.echo(f"{e.address}\t{e.klass}\t{e.level}\t{expires}\t{e.cause}: {e.reason}")


@suppression_group.command("show")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def suppression_show(ctx: Context, address: str, as_json: bool) -> None:
    """Why ADDRESS is suppressed, since when, until when, and how many sends it has refused."""
    addr = _address(address)

    async def go(ctx: Context) -> list[Suppression]:
        store = await open_store(ctx, create=False)
        try:
            return await store.suppressions_of(addr)
        finally:
            await store.close()

    entries = run(go)(ctx)
    now = utcnow()
    if as_json:
        emit_json(
            {
                "address": addr,
                "suppressions": [
                    {**suppression_json(e), "active": e.active(now)}
                    for e in entries
                ],
            }
        )
        return
    if not entries:
        click.echo(f"{addr} is not suppressed")
        return
    for e in entries:
        state = "active" if e.active(now) else "expired"
        expires = "never (until cleared)" if e.expires_at is None else to_text(e.expires_at)
        scope = "all classes" if e.klass == ALL else f"class {e.klass}"
        click.echo(f"{addr}: {scope}, {e.level}, {state}")
        click.echo(f"  cause:    {e.cause}: {e.reason}")
        if e.feedback_id or e.ses_message_id:
            click.echo(f"  from SES: feedback {e.feedback_id or '-'}, message {e.ses_message_id or '-'}")
        click.echo(f"  since:    {to_text(e.created_at)} (last raised {to_text(e.updated_at)})")
        click.echo(f"  expires:  {expires}")
        last = f", last at {to_text(e.last_refused_at)}" if e.last_refused_at else ""
        click.echo(f"  refused:  {e.refused_count} send(s){last}")


@suppression_group.command("clear")
@click.argument("address")
@click.option("--class", "klass", help="Clear only this class ('*' = the all-classes entry); default all.")
@click.option("--reason", default="cleared by admin", show_default=True, help="Recorded in the audit log.")
@common_options
def suppression_clear(ctx: Context, address: str, klass: str | None, reason: str) -> None:
    """Remove ADDRESS's suppressions (audited)."""
    addr = _address(address)
    _class_option(ctx, klass)

    async def go(ctx: Context) -> list[Suppression]:
        store = await open_store(ctx)
        try:
            return await store.clear_suppressions(addr, klass, actor=_actor(), reason=reason, now=utcnow())
        finally:
            await store.close()

    removed = run(go)(ctx)
    if not removed:
        fail(f"{addr} has no suppression{'' if klass is None else f' in class {klass}'}")
    for e in removed:
        click.echo(f"cleared {addr} in class {e.klass} (was {e.level} {e.cause}: {e.reason})")


# -- suppression import / export / sync-ses (relay/ops/suppression_csv.py, relay/ops/ses_sync.py)

IMPORT_CHUNK = 500  # rows a transaction: keeps the writer lock short while the relay runs


@suppression_group.command("export")
@click.argument("file", required=False, default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["full", "ses"]),
    default="full",
    show_default=True,
    help="full: every column, with a header; ses: email,BOUNCE|COMPLAINT only, no header, "
    "all-class entries that never expire (for SES's bulk import).",
)
@click.option("--class", "klass", help="Only this class ('*' for the all-classes entries).")
@click.option("--all", "include_expired", is_flag=True, help="Include expired entries.")
@common_options
def suppression_export(ctx: Context, file: str, fmt: str, klass: str | None, include_expired: bool) -> None:
    """Write suppressions as CSV to FILE (default standard output)."""
    from relay.ops.suppression_csv import write_csv

    _class_option(ctx, klass)

    async def go(ctx: Context) -> list[Suppression]:
        store = await open_store(ctx, create=False)
        try:
            return await store.list_suppressions(now=utcnow(), klass=klass, include_expired=include_expired)
        finally:
            await store.close()

    entries = run(go)(ctx)
    if file == "-":
        write_csv(entries, sys.stdout, fmt)  # type: ignore[arg-type]
        return
    try:
        with open(file, "w", newline="", encoding="utf-8") as out:
            count = write_csv(entries, out, fmt)  # type: ignore[arg-type]
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror}")
    click.echo(f"exported {count} suppression(s) to {file}", err=True)


@suppression_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--class",
    "klass",
    default=ALL,
    show_default=True,
    help="Class for rows without a class column ('*' = all).",
)
@click.option("--dry-run", is_flag=True, help="Validate and report; change nothing.")
@common_options
def suppression_import(ctx: Context, file: str, klass: str, dry_run: bool) -> None:
    """Import suppressions from a CSV FILE (ses-relay's export or SES's email,reason).

    Bad rows are reported with their line numbers and the rest imported; the exit
    status is 1 when any row was bad. Existing entries are merged: a level never
    goes down and an expiry only extends. Every import is in the audit log.
    """
    from relay.ops.suppression_csv import CsvFormatError, parse_csv

    _class_option(ctx, klass)
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8-sig", newline="") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
    try:
        parsed = parse_csv(text, now=utcnow(), classes=ctx.config.classes, default_class=klass)
    except CsvFormatError as exc:
        fail(f"{file}: {exc}", 2)
    for problem in parsed.errors:
        click.echo(f"{file}: {problem}", err=True)
    for problem in parsed.skipped:
        click.echo(f"{file}: {problem}: skipped", err=True)
    name = "standard input" if file == "-" else Path(file).name

    async def go(ctx: Context) -> None:
        store = await open_store(ctx)
        try:
            for start in range(0, len(parsed.entries), IMPORT_CHUNK):
                chunk = parsed.entries[start : start + IMPORT_CHUNK]
                await store.merge_suppressions(chunk, actor=_actor(), action="import", detail=f"from {name}")
        finally:
            await store.close()

    if not dry_run and parsed.entries:
        try:
            run(go)(ctx)
        except StoreError as exc:
            fail(str(exc))
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {len(parsed.entries)} suppression(s); {len(parsed.errors)} bad row(s), "
        f"{len(parsed.skipped)} expired row(s) skipped"
    )
    if parsed.errors:
        sys.exit(1)


@suppression_group.command("sync-ses")
@click.option("--pull", "direction", flag_value="pull", help="Add SES's account-level list to ours.")
@click.option("--push", "direction", flag_value="push", help="Put our all-class, never-expiring "
              "bounce and complaint entries on SES's account-level list.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Read both lists and report; change neither.")
@common_options
def suppression_sync_ses(ctx: Context, direction: str | None, dry_run: bool) -> None:
    """Sync with SES's account-level suppression list (SESv2); never deletes on either side."""
    from relay.ops import ses_sync as sync

    if direction is None:
        fail("give --pull or --push", 2)
    reads_only = direction == "push" or dry_run  # our list is read, never written here
    if reads_only:
        require_store(ctx)
    endpoint = ctx.config.ses.endpoint_url or None
    ses = sync.SesSuppressionList(region=ctx.config.ses.region, endpoint_url=endpoint)
    try:
        at_ses = ses.list_all()
    except sync.SesSyncError as exc:
        fail(str(exc))
    now = utcnow()

    async def read_ours(ctx: Context) -> Any:
        store = await open_store(ctx, create=not reads_only)
        try:
            if direction == "pull":
                addresses = [a for a in (normalise_or_none(i.address) for i in at_ses) if a]
                return await store.suppressions_for(addresses, now)
            return await store.list_suppressions(now=now, klass=ALL)
        finally:
            await store.close()

    ours = run(read_ours)(ctx)
    if direction == "pull":
        pull = sync.plan_pull(at_ses, ours, now)
        for address, why in pull.invalid:
            click.echo(f"SES lists {address!r}, which is not a usable address ({why}): skipped", err=True)

        async def merge(ctx: Context) -> None:
            store = await open_store(ctx)
            try:
                entries = pull.to_merge
                for start in range(0, len(entries), IMPORT_CHUNK):
                    chunk = entries[start : start + IMPORT_CHUNK]
                    await store.merge_suppressions(
                        chunk, actor=_actor(), action="sync-ses-pull", detail="SES account-level list"
                    )
            finally:
                await store.close()

        if not dry_run and pull.to_merge:
            run(merge)(ctx)
        click.echo(
            f"SES lists {len(at_ses)} address(es): {'would add' if dry_run else 'added'} "
            f"{len(pull.new)} new, "
            f"{len(pull.known)} already suppressed here, {len(pull.invalid)} unusable"
        )
        return
    push = sync.plan_push(ours, sync.ses_index(at_ses), now)
    pushed = 0
    if not dry_run:
        for address, reason in push.to_put:
            try:
                ses.put(address, reason)
            except sync.SesSyncError as exc:
                click.echo(f"pushed {pushed} of {len(push.to_put)} before an error", err=True)
                fail(str(exc))
            pushed += 1
    click.echo(
        f"{'would put' if dry_run else 'put'} {len(push.to_put)} address(es) on SES's list; "
        f"{len(push.already)} already there, "
        f"{len(push.expiring)} skipped because they expire here (SES entries do not)"
    )


def normalise_or_none(address: str) -> str | None:
    try:
        return normalise(address)
    except AddressError:
        return None


# -- setup-aws (relay/ops/setup_aws.py) ------------------------------------------------


@main.command("setup-aws")
@click.option("--prefix", default="ses-relay", show_default=True, help="Start of every resource name.")
@click.option(
    "--ses-api",
    type=click.Choice(["v2", "v1"]),
    default="v2",
    show_default=True,
    help="SES API for configuration sets; v1 cannot publish DeliveryDelay and Subscription events.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--write-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the resulting config to FILE (an existing FILE is kept as FILE.bak) instead of printing it.",
)
@common_options
def setup_aws(ctx: Context, prefix: str, ses_api: str, dry_run: bool, write_config: Path | None) -> None:
    """Create each class's SES configuration set, event destination, SNS topic, SQS queue and
    dead-letter queue, queue policy and subscription. Idempotent; never deletes.

    Prints what it created and what already existed, then the configuration with
    the queue URLs in [feedback] (the whole output is valid TOML).
    """
    from relay.ops import setup_aws as aws
    from relay.ops.config_toml import config_data, dumps

    try:
        names = aws.class_names(ctx.config, prefix)
    except ValueError as exc:
        fail(str(exc), 2)
    region, endpoint = ctx.config.ses.region, ctx.config.ses.endpoint_url or None
    plain = dry_run or write_config is not None

    def say(line: str) -> None:
        click.echo(line if plain else f"# {line}")

    try:
        clients = aws.Clients.create(region=region, endpoint_url=endpoint, api=ses_api)  # type: ignore[arg-type]
        account = aws.account_of(clients, region)
        existing = aws.discover(clients, names)
        steps = aws.plan(names, existing, account, api=ses_api, prefix=prefix)  # type: ignore[arg-type]
        if dry_run:
            for step in steps:
                say(step.line())
        else:
            outcome = aws.execute(steps, clients, existing, report=say)
    except aws.SetupError as exc:
        fail(str(exc))
    counts = {a: sum(1 for s in steps if s.action == a) for a in ("create", "update", "exists", "differs")}
    tense = ("to create", "to update") if dry_run else ("created", "updated")
    say(
        f"{counts['create']} {tense[0]}, {counts['update']} {tense[1]}, {counts['exists']} already existed, "
        f"{counts['differs']} differ (left alone) in {account.region} for account {account.account_id}"
    )
    if dry_run:
        say("dry run: nothing was changed; run without --dry-run to get the config with the queue URLs")
        return
    urls = aws.queue_urls(names, existing, outcome.created_queues)
    data = aws.updated_config(config_data(ctx.config), names, urls, region)
    try:
        configuration.from_dict(data)
    except ConfigError as exc:  # a bug here, not the operator's: say so plainly
        fail(f"the resulting configuration does not validate: {exc}")
    text = "# ses-relay configuration written by `ses-relay setup-aws`\n" + dumps(data)
    if write_config is None:
        click.echo("")
        click.echo(text, nl=False)
        return
    try:
        if write_config.exists():
            write_config.with_name(write_config.name + ".bak").write_bytes(write_config.read_bytes())
        tmp = write_config.with_name(write_config.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(write_config)
    except OSError as exc:
        fail(f"cannot write {write_config}: {exc.strerror}")
    click.echo(f"wrote {write_config}")


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


# -- submission ----------------------------------------------------------------


@main.group("submission")
def submission_group() -> None:
    """Inspect accepted messages."""


def submission_json(sub: Any) -> dict[str, Any]:
    return {
        "id": sub.id,
        "mail_from": sub.mail_from,
        "class": sub.klass,
        "class_source": sub.class_source,
        "configuration_set": sub.configuration_set,
        "subject": sub.subject,
        "message_id": sub.message_id,
        "size": sub.size,
        "created_at": to_text(sub.created_at),
        "auth_user": sub.auth_user,
        "client_ip": sub.client_ip,
        "recipients": [
            {
                "address": r.address,
                "status": r.status,
                "detail": r.detail,
                "ses_message_id": r.ses_message_id,
                "updated_at": to_text(r.updated_at),
            }
            for r in sub.recipients
        ],
    }


@submission_group.command("show")
@click.argument("submission_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def submission_show(ctx: Context, submission_id: str, as_json: bool) -> None:
    """Show a submission and the status of each recipient."""

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.submission(submission_id)
        finally:
            await store.close()

    sub = run(go)(ctx)
    if sub is None:
        fail(f"no submission {submission_id!r}")
    if as_json:
        emit_json(submission_json(sub))
        return
    click.echo(f"submission {sub.id}  from <{sub.mail_from}>  class {sub.klass} ({sub.class_source})")
    via = f"user {sub.auth_user}" if sub.auth_user else "no AUTH"
    click.echo(f"  created {to_text(sub.created_at)} from {sub.client_ip or 'the relay itself'} ({via})")
    click.echo(f"  {sub.size} bytes, subject: {sub.subject or '-'}")
    for r in sub.recipients:
        extra = f"  {r.ses_message_id}" if r.ses_message_id else ""
        detail = f"  ({r.detail})" if r.detail else ""
        click.echo(f"  {r.address}: {r.status}{extra}{detail}")


RECIPIENT_STATUSES = tuple(s.value for s in Status)  # plain text: click matches Enum choices by name


@submission_group.command("list")
@click.option("--sender", help="Only mail from this envelope sender (MAIL FROM).")
@click.option(
    "--status",
    type=click.Choice(RECIPIENT_STATUSES),
    help="Only submissions with at least one recipient in this status.",
)
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (each as `submission show --json`).")
@common_options
def submission_list(
    ctx: Context, sender: str | None, status: str | None, since: str, limit: int, as_json: bool
) -> None:
    """Recent submissions, newest first, with their recipients' statuses."""
    try:
        window = configuration.parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)
    addr = _address(sender) if sender else None

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.recent_submissions(utcnow() - window, sender=addr, status=status, limit=limit)
        finally:
            await store.close()

    subs = run(go)(ctx)
    if as_json:
        emit_json([submission_json(sub) for sub in subs])
        return
    if not subs:
        click.echo(f"no submissions in the last {since}")
    for sub in subs:
        counts: dict[str, int] = {}
        for r in sub.recipients:
            counts[r.status] = counts.get(r.status, 0) + 1
        statuses = ", ".join(f"{n} {name}" for name, n in counts.items())
        click.echo(
            f"{sub.id}  {to_text(sub.created_at)}  <{sub.mail_from}>  {sub.klass}  [{statuses}]  "
            f"{sub.subject or '-'}"
        )


# -- dkim ------------------------------------------------------------------------


@main.group("dkim")
def dkim_group() -> None:
    """DKIM keys for signing before SES."""


@dkim_group.command("keygen")
@click.argument("domain")
@click.option("--selector", required=True, help="DKIM selector (the DNS name's first label).")
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key for this domain and selector.")
@common_options
def dkim_keygen(ctx: Context, domain: str, selector: str, bits: int, force: bool) -> None:
    """Make a key for DOMAIN under the data dir and print the DNS TXT record to publish."""
    from relay.sending import dkim as dkim_mod

    try:
        info = dkim_mod.keygen(ctx.data_dir, domain, selector, bits=bits, force=force)
    except (FileExistsError, ValueError, dkim_mod.DkimError) as exc:
        fail(str(exc))
    click.echo(f"private key: {info.path}")
    click.echo("publish this DNS TXT record:")
    click.echo(info.zone_line())



# -- feedback --------------------------------------------------------------------


@main.group("feedback")
def feedback_group() -> None:
    """Consume SES events (SNS -> SQS), replay saved ones, inspect what could not be applied."""


def _sqs_sources(ctx: Context, queue_urls: tuple[str, ...]) -> list[Any]:
    from feedback.ingest.consumer import SqsSource

    return [SqsSource(url, region=ctx.config.ses.region) for url in queue_urls]  # SQS: botocore's endpoint


def _print_result(result: Any) -> None:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.kinds.items())) or "none"
    click.echo(
        f"applied {result.events} event(s) ({kinds}); {result.duplicates} duplicate(s), "
        f"{result.dead_letters} dead letter(s), {result.suppressions} suppression change(s), "
        f"{result.notices} notice(s) queued"
    )


@feedback_group.command("consume")
@click.option(
    "--queue-url",
    "queue_urls",
    multiple=True,
    help="SQS queue to read (repeatable); default [feedback] queue_urls.",
)
@click.option("--once", is_flag=True, help="Drain the queues and exit instead of long-polling forever.")
@common_options
def feedback_consume(ctx: Context, queue_urls: tuple[str, ...], once: bool) -> None:
    """Apply SES events from SQS: statuses, the events log, suppressions, notices."""
    from feedback.apply import BatchResult
    from feedback.ingest.consumer import consume

    urls = queue_urls or ctx.config.feedback.queue_urls
    if not urls:
        fail("no queue: give --queue-url or set [feedback] queue_urls", 2)

    async def go(ctx: Context) -> BatchResult:
        store = await open_store(ctx)
        stop = asyncio.Event()
        if not once:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            results = await asyncio.gather(
                *(consume(store, src, ctx.config, stop=stop, drain=once) for src in _sqs_sources(ctx, urls))
            )
        finally:
            await store.close()
        total = BatchResult()
        for r in results:
            total.add(r)
        return total

    try:
        _print_result(run(go)(ctx))
    except StoreError as exc:
        fail(str(exc))


@feedback_group.command("replay")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@common_options
def feedback_replay(ctx: Context, files: tuple[Path, ...]) -> None:
    """Apply saved events from FILES (JSON or JSON Lines: SES events, SNS envelopes or SQS records)."""
    from feedback.ingest.replay import replay

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx)
        try:
            return await replay(store, list(files), ctx.config)
        finally:
            await store.close()

    try:
        _print_result(run(go)(ctx))
    except StoreError as exc:
        fail(str(exc))


@feedback_group.command("dead-letters")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def feedback_dead_letters(ctx: Context, as_json: bool) -> None:
    """Queue messages that could not be parsed, with the error."""

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.dead_letters()
        finally:
            await store.close()

    items = run(go)(ctx)
    if as_json:
        emit_json(
            [
                {"id": d.id, "received_at": to_text(d.received_at), "source": d.source, "error": d.error,
                 "body": d.body}
                for d in items
            ]
        )  # fmt: skip
        return
    if not items:
        click.echo("no dead letters")
    for d in items:
        click.echo(f"#{d.id} {to_text(d.received_at)} {d.source}: {d.error}")


@feedback_group.command("review")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def feedback_review(ctx: Context, as_json: bool) -> None:
    """Events that need a person: undetermined bounces, sender-at-fault rejections."""

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.review_items()
        finally:
            await store.close()

    items = run(go)(ctx)
    if as_json:
        emit_json(
            [
                {"id": r.id, "created_at": to_text(r.created_at), "recipient": r.recipient, "class": r.klass,
                 "reason": r.reason, "ses_message_id": r.ses_message_id}
                for r in items
            ]
        )  # fmt: skip
        return
    if not items:
        click.echo("nothing to review")
    for r in items:
        click.echo(f"#{r.id} {to_text(r.created_at)} {r.recipient or '-'} [{r.klass or '*'}]: {r.reason}")


@feedback_group.command("http")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default="127.0.0.1:8080",
    show_default=True,
    help="Where SNS (or the TLS proxy in front) delivers.",
)
@click.option("--tls", is_flag=True, help="Serve HTTPS with [tls] cert_file and key_file.")
@common_options
def feedback_http(ctx: Context, listen: str, tls: bool) -> None:
    """Receive SES events from SNS HTTP(S) subscriptions: verify each signature, then apply them.

    Only topics in [feedback] sns_topic_arns are accepted (and their subscriptions
    confirmed); anything unsigned, forged or for another topic gets 403 and changes
    nothing. Certificates are read from [feedback] sns_cert_dir first.
    """
    from feedback.ingest.sns_http import run_sns_http, tls_context

    try:
        host, port = configuration.parse_hostport(listen)
    except ValueError as exc:
        fail(f"--listen: {exc}", 2)
    ssl_context = None
    if tls:
        if not (ctx.config.tls.cert_file and ctx.config.tls.key_file):
            fail("--tls needs [tls] cert_file and key_file", 2)
        try:
            ssl_context = tls_context(ctx.config.tls.cert_file, ctx.config.tls.key_file)
        except (OSError, ValueError) as exc:
            fail(f"configuration error: [tls] cert_file/key_file: {exc}", 2)

    async def go(ctx: Context) -> None:
        store = await open_store(ctx)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_sns_http(
                store, ctx.config, host, port, stop=stop, ssl_context=ssl_context, announce=click.echo
            )
        finally:
            await store.close()

    try:
        run(go)(ctx)
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc}")


@feedback_group.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="PEM files named as the SigningCertURL's last path part [default: [feedback] sns_cert_dir].",
)
@click.option("--no-fetch", is_flag=True, help="Never download certificates; use only the cert dir.")
@common_options
def feedback_verify(ctx: Context, files: tuple[Path, ...], cert_dir: Path | None, no_fetch: bool) -> None:
    """Check saved SNS messages' signatures and certificate URLs: one line per file, exit 1 if any fails.

    A file may hold an SNS envelope, an SQS record or a Lambda SNS event, one JSON
    document or JSON Lines. The topic allow list is not checked (that is the
    endpoint's business).
    """
    from feedback.ingest.sns_verify import SnsVerifier, check_file, fetch_https

    directory = cert_dir
    if directory is None and ctx.config.feedback.sns_cert_dir:
        directory = Path(ctx.config.feedback.sns_cert_dir)
    verifier = SnsVerifier(cert_dir=directory, fetch=None if no_fetch else fetch_https)
    failed = 0
    for path in files:
        why = check_file(path, verifier)
        click.echo(f"{path}: {why or 'verified'}")
        failed += why is not None
    if failed:
        sys.exit(1)


# -- events ------------------------------------------------------------------------


@main.group("events")
def events_group() -> None:
    """The feedback log: every SES event received, per recipient."""


@events_group.command("list")
@click.option("--address", help="Only events for this recipient.")
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def events_list(ctx: Context, address: str | None, since: str, limit: int, as_json: bool) -> None:
    """List logged SES events, oldest first."""
    try:
        window = configuration.parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)
    addr = _address(address) if address else None

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.events(address=addr, since=utcnow() - window, limit=limit)
        finally:
            await store.close()

    rows = run(go)(ctx)
    if as_json:
        emit_json(
            [
                {
                    "id": e.id,
                    "time": to_text(e.record.occurred_at),
                    "received_at": to_text(e.received_at),
                    "kind": e.record.kind,
                    "recipient": e.record.recipient,
                    "ses_message_id": e.record.ses_message_id,
                    "submission_id": e.record.submission_id,
                    "class": e.record.klass,
                    "bounce_type": e.record.bounce_type,
                    "bounce_subtype": e.record.bounce_subtype,
                    "diagnostic": e.record.diagnostic,
                    "status": e.record.status,
                    "complaint_type": e.record.complaint_type,
                    "source_ip": e.record.source_ip,
                    "from_address": e.record.from_address,
                    "subject": e.record.subject,
                }
                for e in rows
            ]
        )
        return
    if not rows:
        click.echo("no events")
    for e in rows:
        r = e.record
        what = "/".join(p for p in (r.bounce_type, r.bounce_subtype) if p) or r.complaint_type or ""
        click.echo(f"{to_text(r.occurred_at)} {r.kind:<17} {r.recipient or '-'} {what} {r.diagnostic or ''}")


# -- notices -------------------------------------------------------------------------


@main.group("notices")
def notices_group() -> None:
    """Notices to senders about mail that did not reach a recipient."""


@notices_group.command("list")
@click.option("--pending", is_flag=True, help="Only notices not delivered yet.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def notices_list(ctx: Context, pending: bool, as_json: bool) -> None:
    """List notices: pending (retried with backoff), sent, skipped (and why) or failed."""

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.notices(pending_only=pending)
        finally:
            await store.close()

    rows = run(go)(ctx)
    if as_json:
        emit_json(
            [
                {
                    "id": n.id,
                    "state": n.state,
                    "reason": n.record.reason,
                    "sender": n.record.sender,
                    "recipient": n.record.recipient,
                    "submission_id": n.record.submission_id,
                    "created_at": to_text(n.created_at),
                    "attempts": n.attempts,
                    "next_attempt_at": to_text(n.next_attempt_at),
                    "last_error": n.last_error,
                    "delivered_at": maybe_text(n.delivered_at),
                }
                for n in rows
            ]
        )
        return
    if not rows:
        click.echo("no notices")
    for n in rows:
        error = f" ({n.last_error})" if n.last_error else ""
        rec = n.record
        click.echo(f"#{n.id} {n.state:<8} {rec.reason:<24} to <{rec.sender}> about {rec.recipient}{error}")


# -- report (feedback/reports/report.py) -------------------------------------------------------


@main.command("report")
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained page (summary, chart per hour, every row) to FILE.",
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as CSV."
)
@click.option(
    "--xlsx", "xlsx_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write a spreadsheet: sheet Events (the rows) and sheet Summary.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary, rows and hourly counts as JSON.")
@common_options
def report_command(
    ctx: Context, since: str, html_path: Path | None, csv_path: Path | None, xlsx_path: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Every bounce and complaint in the window, with source IP and From address, and a summary.

    With no file option, prints the summary.
    """
    from feedback.reports import report as reports

    try:
        window = configuration.parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)
    if window.total_seconds() <= 0:
        fail("--since: the window must be longer than zero", 2)
    until = utcnow()

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await reports.collect(store, since=until - window, until=until)
        finally:
            await store.close()

    try:
        built = run(go)(ctx)
    except StoreError as exc:
        fail(str(exc))
    writers = (
        (html_path, reports.write_html), (csv_path, reports.write_csv), (xlsx_path, reports.write_xlsx)
    )
    for path, write in writers:
        if path is None:
            continue
        try:
            write(built, path)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
        if not as_json:
            click.echo(f"wrote {path} ({len(built.rows)} row(s))")
    if as_json:
        emit_json(reports.as_json(built))
    elif not any(path for path, _ in writers):
        click.echo(reports.summary_text(built))


# -- stats and the reputation guard ----------------------------------------------------


@main.command("stats")
@click.option("--since", default="24h", show_default=True, help="Window: e.g. 1h, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def stats(ctx: Context, since: str, as_json: bool) -> None:
    """Sends, deliveries, bounces and complaints per class, with SES's review and pause thresholds."""
    from relay.ops.stats import SES_PAUSE, SES_REVIEW, standing, summarise

    try:
        window = configuration.parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.outcome_counts(utcnow() - window)
        finally:
            await store.close()

    overall, classes = summarise(run(go)(ctx))
    if as_json:
        emit_json(
            {
                "since": since,
                "overall": overall.as_dict(),
                "classes": {k: c.as_dict() for k, c in classes.items()},
                "thresholds": {"review": SES_REVIEW, "pause": SES_PAUSE},
            }
        )
        return
    click.echo(
        f"last {since}; SES reviews at bounce {SES_REVIEW['bounce_rate']:.0%} / complaint "
        f"{SES_REVIEW['complaint_rate']:.1%}, may pause at {SES_PAUSE['bounce_rate']:.0%} / "
        f"{SES_PAUSE['complaint_rate']:.1%}"
    )
    header = f"{'class':<14}{'sent':>8}{'deliv':>8}{'bounce':>8}{'perm':>6}{'compl':>7}{'rej':>5}"
    click.echo(f"{header}{'bounce%':>9}{'compl%':>9}  standing")
    for name, c in [("overall", overall), *classes.items()]:
        click.echo(
            f"{name:<14}{c.sent:>8}{c.delivered:>8}{c.bounced:>8}{c.bounced_permanent:>6}{c.complained:>7}"
            f"{c.rejected:>5}{c.bounce_rate:>9.2%}{c.complaint_rate:>9.3%}  {standing(c)}"
        )


@main.group("class")
def class_group() -> None:
    """Show, pause and resume message classes (the reputation guard pauses them too)."""


def _known_class(ctx: Context, klass: str) -> str:
    if klass not in ctx.config.classes:
        fail(f"unknown class {klass!r}; configured: {', '.join(sorted(ctx.config.classes))}", 2)
    return klass


@class_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def class_status(ctx: Context, as_json: bool) -> None:
    """Each class, its configuration set, and whether it is paused (and why)."""

    async def go(ctx: Context) -> Any:
        store = await open_store(ctx, create=False)
        try:
            return await store.class_states()
        finally:
            await store.close()

    states = run(go)(ctx)
    rows = []
    for name, conf in ctx.config.classes.items():
        state = states.get(name)
        rows.append(
            {
                "class": name,
                "configuration_set": conf.configuration_set,
                "paused": bool(state and state.paused),
                "reason": state.reason if state else "",
                "changed_at": to_text(state.changed_at) if state else None,
                "changed_by": state.changed_by if state else None,
            }
        )
    if as_json:
        emit_json(rows)
        return
    from relay.ops.guard import paused_by

    for r in rows:
        state = "open"
        if r["paused"]:
            reason = f": {r['reason']}" if r["reason"] else ""
            state = f"PAUSED: paused by {paused_by(r['changed_by'])} since {r['changed_at']}{reason}"
        click.echo(f"{r['class']:<14} set={r['configuration_set'] or '-':<10} {state}")


def _set_paused(ctx: Context, klass: str, paused: bool, reason: str) -> None:
    async def go(ctx: Context) -> Any:
        store = await open_store(ctx)
        try:
            return await store.set_class_paused(klass, paused, reason=reason, actor=_actor(), now=utcnow())
        finally:
            await store.close()

    run(go)(ctx)


@class_group.command("pause")
@click.argument("klass", metavar="CLASS")
@click.option("--reason", default="", help="Why; shown in the 451 reply and by `class status`.")
@common_options
def class_pause(ctx: Context, klass: str, reason: str) -> None:
    """Pause CLASS: its new mail is refused with 451 4.7.1 (or held, per [guard] action).

    The pause reads "paused by" the CLI user, as the audit log names them.
    """
    _set_paused(ctx, _known_class(ctx, klass), True, reason)
    click.echo(f"class {klass} paused by {_actor()}")


@class_group.command("resume")
@click.argument("klass", metavar="CLASS")
@click.option("--reason", default="resumed by admin", show_default=True)
@common_options
def class_resume(ctx: Context, klass: str, reason: str) -> None:
    """Resume CLASS; the guard counts its rates afresh from now."""
    _set_paused(ctx, _known_class(ctx, klass), False, reason)
    click.echo(f"class {klass} resumed")


# -- user ------------------------------------------------------------------------------


@main.group("user")
def user_group() -> None:
    """SMTP AUTH users: [auth] users_file (default <data-dir>/users.json), scrypt hashes only."""


def _users_file(ctx: Context) -> Path:
    from relay.intake.users import users_path

    return users_path(ctx.config.auth.users_file, ctx.data_dir)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


@user_group.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option(
    "--sender",
    "senders",
    multiple=True,
    help="An address, @domain, or '*' this user may send as (MAIL FROM and From:); repeatable, needed.",
)
@click.option("--default-class", help="Class for this user's mail when no header names one.")
@click.option(
    "--rate", type=click.IntRange(min=0), default=0, show_default=True, help="Messages a minute; 0: no limit."
)
@click.option("--may-set-arns", is_flag=True, help="Honour the X-SES-*-ARN headers this user sends.")
@click.option("--replace", is_flag=True, help="Replace an existing user (password and rules).")
@common_options
def user_add(
    ctx: Context,
    name: str,
    password_stdin: bool,
    senders: tuple[str, ...],
    default_class: str | None,
    rate: int,
    may_set_arns: bool,
    replace: bool,
) -> None:
    """Add user NAME; prompts for the password twice unless --password-stdin."""
    from relay.intake.users import (
        User,
        UsersFileError,
        check_name,
        editing,
        hash_password,
        normalise_sender_rule,
    )

    try:
        check_name(name)
        rules = tuple(dict.fromkeys(normalise_sender_rule(s) for s in senders))
    except UsersFileError as exc:
        fail(str(exc), 2)
    if not rules:
        fail("give at least one --sender: an address, @domain, or '*' for any sender", 2)
    if default_class is not None and default_class not in ctx.config.classes:
        names = ", ".join(sorted(ctx.config.classes))
        fail(f"--default-class: unknown class {default_class!r}; configured: {names}", 2)
    path = _users_file(ctx)
    try:
        with editing(path, ctx.config.classes) as users:
            if name in users.users and not replace:
                fail(f"user {name!r} already exists in {path} (use --replace to change it)")
            password = _read_password(password_stdin)
            users.users[name] = User(name, hash_password(password), rules, default_class, rate, may_set_arns)
    except UsersFileError as exc:
        fail(str(exc), 2)
    click.echo(f"{'replaced' if replace else 'added'} user {name} in {path}")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def user_list(ctx: Context, as_json: bool) -> None:
    """List users and their rules (never the hashes)."""
    from relay.intake.users import UsersFileError, load_users

    if not ctx.config.auth.users_file and not ctx.data_dir.is_dir():
        require_store(ctx)  # the users file would be in a data dir that is not there
    try:
        users = load_users(_users_file(ctx), ctx.config.classes).users
    except UsersFileError as exc:
        fail(str(exc), 2)
    rows = [
        {
            "name": u.name,
            "senders": list(u.senders),
            "default_class": u.default_class,
            "rate_per_minute": u.rate_per_minute,
            "may_set_arns": u.may_set_arns,
        }
        for u in sorted(users.values(), key=lambda u: u.name)
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no users")
    for r in rows:
        rate = f"{r['rate_per_minute']}/min" if r["rate_per_minute"] else "no rate limit"
        extra = ", may set ARNs" if r["may_set_arns"] else ""
        click.echo(f"{r['name']}\t{' '.join(r['senders'])}\tclass={r['default_class'] or '-'}\t{rate}{extra}")


@user_group.command("remove")
@click.argument("name")
@common_options
def user_remove(ctx: Context, name: str) -> None:
    """Remove user NAME (a relay that is running notices within one AUTH)."""
    from relay.intake.users import UsersFileError, editing

    path = _users_file(ctx)
    try:
        with editing(path, ctx.config.classes) as users:
            if users.users.pop(name, None) is None:
                fail(f"no user {name!r} in {path}")
    except UsersFileError as exc:
        fail(str(exc), 2)
    click.echo(f"removed user {name} from {path}")


# Last, after every command is defined: `python -m cli` (how serve starts its worker)
# must see the same commands as the `ses-relay` entry point.
if __name__ == "__main__":
    main(prog_name="ses-relay")
