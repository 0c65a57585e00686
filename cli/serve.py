"""`ses-relay serve`: the SMTP intake, and the worker process it starts and supervises.

Its services (relay/ops/services.py, process "serve") are built here from Serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from cli.app import Context, fail, main, open_store, stop_on_signals
from cli.options import common_options
from relay import config as configuration
from relay.config import Config
from relay.ops import services
from relay.store import Store, StoreError

if TYPE_CHECKING:
    from relay.ops.guard import ClassGuard
    from relay.ops.monitor import Monitor
    from relay.ops.state_mirror import StateMirror
    from relay.ops.supervisor import WorkerSupervisor

from cli.processes import (
    Access,
    Loops,
    access_of,
    check_dkim,
    check_notice_routes,
    finish,
    multiprocess_metrics,
    run_loop,
    warn_unalerted_guard,
)  # fmt: skip

log = logging.getLogger("ses_relay")


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
    multiprocess_metrics(ctx.data_dir)
    config = ctx.config
    if listen:
        try:
            listener = config.listeners[0].model_copy(update={"listen": listen})
            configuration.parse_hostport(listen)
        except ValueError as exc:
            fail(f"--listen: {exc}", 2)
        config = config.model_copy(update={"listeners": (listener,)})
    access = access_of(config, ctx.data_dir)
    check_notice_routes(config)
    check_dkim(ctx)
    warn_unalerted_guard(config)
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
            await finish(s.stop, tasks, grace=40)


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
