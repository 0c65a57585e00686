"""The `ses-relay` group and what its commands share: the Context, the store, the output.

Commands reach the store through `with_store` (one open, one close, a store error
as one line), print listings with `emit_rows` or `emit_json` under --json, and end
with `fail` (a message on standard error and an exit status: 2 for a usage or
configuration error, 1 for anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from relay import logsetup
from relay.config import Config
from relay.store import Store, StoreError

T = TypeVar("T")
STORE_FILE = "relay.db"


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

    @property
    def has_state(self) -> bool:
        """Is there a state to read: the shared one when configured, else the data dir's store?"""
        return self.config.state.shared or self.store_path.is_file()


def fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"ses-relay: {message}", err=True)
    sys.exit(status)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def emit_rows(
    rows: Sequence[T], as_json: bool, *, as_dict: Callable[[T], Any], line: Callable[[T], str], empty: str
) -> None:
    """A listing: a JSON array under --json, else one line a row, or `empty` when there are none."""
    if as_json:
        emit_json([as_dict(row) for row in rows])
        return
    if not rows:
        click.echo(empty)
    for row in rows:
        click.echo(line(row))


# -- the store ---------------------------------------------------------------------------


def require_store(ctx: Context) -> None:
    """Commands that only read answer from an existing store, never from a new empty one.

    Pointed at the wrong data dir, "no suppressions" would look like an answer; say
    where we looked instead, and create nothing there. A shared state ([state] url)
    needs no data dir: the commands answer from it.
    """
    if ctx.has_state:
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


@contextlib.asynccontextmanager
async def open_store(
    ctx: Context, *, fsync_every_commit: bool = True, create: bool = True, spool: bool = True,
    state_required: bool = True,
) -> AsyncIterator[Store]:  # fmt: skip
    """The store in the data dir (and the shared state, when configured), closed on the way out.

    `create=False` (commands that only read) fails if there is none yet. `spool=False`:
    with a shared state, open that alone (the admin commands touch no spool).
    `state_required=False`: see Store.open (serve).
    """
    if not create:
        require_store(ctx)
    try:
        store = await Store.open(
            ctx.store_path, fsync_every_commit=fsync_every_commit, state=ctx.config.state, spool=spool,
            state_required=state_required,
        )  # fmt: skip
    except StoreError as exc:
        fail(str(exc))
    try:
        yield store
    finally:
        await store.close()


def with_store(ctx: Context, fn: Callable[[Store], Awaitable[T]], *, create: bool = True) -> T:
    """Run `fn` on the store, from a command: one event loop, one open, one close.

    A store that fails on the way (locked, unreadable, full disk) ends the command
    with its message and status 1.
    """

    async def go() -> T:
        async with open_store(ctx, create=create, spool=False) as store:
            return await fn(store)

    try:
        return asyncio.run(go())
    except StoreError as exc:
        fail(str(exc))


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop`: long-running commands then finish their work and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def actor() -> str:
    """Who did it, for the audit log and the "paused by" of a class: the CLI user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


# -- the group ---------------------------------------------------------------------------


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
