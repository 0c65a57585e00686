"""The options and arguments commands share, parsed the same way everywhere.

--config, --data-dir, --log-level and --log-format (also from the environment) are
on every command and resolve into one Context; a bad configuration exits with status
2 and names the key. Values several commands take (--json, --since, an address) are
declared and parsed here once; a bad one exits 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.app import Context, fail
from relay import config as configuration
from relay import logredact, logsetup
from relay.addresses import AddressError, normalise
from relay.config import ConfigError

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


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
        password = config.state.password
        if password:
            logredact.install([password])  # masked in any log line, URL or not
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


def since_window(since: str) -> timedelta:
    """A --since value (30m, 24h, 7d); a bad one exits 2 naming the option."""
    try:
        return configuration.parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)


def address_argument(value: str) -> str:
    """An address given on the command line, normalised as the store keeps it; bad: exit 2."""
    try:
        return normalise(value)
    except AddressError as exc:
        fail(str(exc), 2)
