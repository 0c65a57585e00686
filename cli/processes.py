"""What `serve` and `worker` share: the event loop, the checks made at start, the exit.

serve (cli/serve.py) is the SMTP intake; sending and feedback run in a worker
process of its own (cli/worker.py), as Postfix keeps smtpd apart from its delivery
agents: boto3's CPU cost and the GIL then never slow the intake, and the intake
needs no AWS credentials.

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
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.app import Context, fail
from relay import config as configuration
from relay.config import Config, ConfigError
from relay.loop import Loop

if TYPE_CHECKING:
    pass

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


def check_dkim(ctx: Context, *, load: bool = False) -> Any:
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


def warn_unalerted_guard(config: Config) -> None:
    from relay.ops.guard import unalerted

    warning = unalerted(config)
    if warning:
        log.warning("%s", warning)


def multiprocess_metrics(data_dir: Path) -> None:
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


def access_of(config: Config, data_dir: Path) -> Access:
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


async def finish(stop: asyncio.Event, tasks: list[asyncio.Task[Any]], *, grace: float) -> None:
    """Stop the loops and give them `grace` seconds to finish the work in hand."""
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=grace)
