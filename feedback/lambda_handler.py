"""The AWS Lambda function: SES events from an SQS trigger, applied to the shared state.

The function's Handler setting is `feedback.lambda_handler.handler`, and stays so.
Each invocation applies its SQS batch through the path of `feedback consume`
(feedback/ingest/lambda_sqs.py) and answers with the records SQS must deliver
again (`batchItemFailures`; the event-source mapping has ReportBatchItemFailures).

Configuration, read at a cold start from the environment:
- `SES_RELAY_STATE_URL`: the PostgreSQL URL of the shared state (or `[state] url` in
  the config file); required, as the function keeps nothing of its own;
- `SES_RELAY_CONFIG`: a TOML file for `[policy]`, `[classes]`, `default_class` and
  `[state] connect_timeout`, as a path inside the package (relative to the folder
  holding `feedback/`) or an absolute one; unset, `ses-relay.toml` at the package's
  root when it has one (`ses-relay lambda package --include-config`), else the
  defaults. The relays' own file, so that events are decided here as there;
- `SES_RELAY_LOG_LEVEL`: debug, info (the default), warning or error;
- `SES_RELAY_LAMBDA_CHUNK`: records committed per transaction (default 10).

Module-level state lives as long as the execution environment: the configuration,
one event loop, and one Store on the shared state alone (no spool), with a pool of
one connection, opened by the first invocation and reused by the next ones. After
a store failure the Store is closed, and the next invocation opens a new one rather
than waiting out the pool's reconnection back-off. The loop is kept rather than
made per invocation (asyncio.run): the Store's backend is created on a loop and
may keep things bound to it (futures, the timer of deferred writes) from one call
to the next; `run_until_complete` runs the loop only during an invocation, and
between invocations Lambda freezes the process with the loop idle.

Logs are JSON lines on standard output (relay/logsetup.py), one per invocation at
info plus warnings and errors; the URL's password never appears in them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.ingest import lambda_sqs
from relay import config as configuration
from relay import logredact, logsetup
from relay.config import Config, ConfigError
from relay.store import Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.feedback.lambda")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the deployment package's root: /var/task
CONFIG_FILE = "ses-relay.toml"
CONFIG_ENV = "SES_RELAY_CONFIG"
LOG_LEVEL_ENV = "SES_RELAY_LOG_LEVEL"
CHUNK_ENV = "SES_RELAY_LAMBDA_CHUNK"
LOG_LEVELS = ("debug", "info", "warning", "error")
SPARE_SECONDS = 2.0  # beyond a connection timeout, what a chunk may take


@dataclass
class Environment:
    """What a cold start sets up, kept for the invocations that follow."""

    config: Config
    chunk: int
    loop: asyncio.AbstractEventLoop
    store: Store | None = None

    @property
    def margin(self) -> float:
        """The time a chunk may need: a connection attempt that times out, and then some."""
        return self.config.state.connect_timeout.total_seconds() + SPARE_SECONDS


_environment: Environment | None = None


def handler(event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    """Apply an SQS batch; the records whose effects could not be committed are named for SQS."""
    env = _environment or _cold_start()
    logsetup.LAMBDA_REQUEST.current = getattr(context, "aws_request_id", None)
    try:
        return env.loop.run_until_complete(_invoke(env, event, context))
    finally:
        logsetup.LAMBDA_REQUEST.current = None


def shutdown() -> None:
    """Close the Store and the loop and forget the configuration: the next invocation starts cold.

    Lambda gives a function no shutdown call; this is for a process that uses the
    handler with another configuration afterwards (tests, a local runner).
    """
    global _environment
    env, _environment = _environment, None
    if env is None:
        return
    if env.store is not None:
        env.loop.run_until_complete(_close(env))
    env.loop.close()


def _cold_start() -> Environment:
    global _environment
    level = os.environ.get(LOG_LEVEL_ENV, "info").strip().lower() or "info"
    logsetup.configure_lambda(level if level in LOG_LEVELS else "info")
    if level not in LOG_LEVELS:
        log.warning("%s=%r is not one of %s; logging at info", LOG_LEVEL_ENV, level, ", ".join(LOG_LEVELS))
    try:
        config = load_config()
        chunk = chunk_size(os.environ.get(CHUNK_ENV, ""))
    except ConfigError as exc:
        # Raised, not answered: every invocation fails and SQS keeps the messages (its
        # redrive policy catches them) until the deployment is fixed.
        log.error("configuration error: %s", exc)
        raise
    _environment = Environment(config, chunk, asyncio.new_event_loop())
    log.info(
        "cold start: state %s, config %s, %d record(s) a transaction",
        config.state.where, config_path() or "defaults", chunk,
    )  # fmt: skip
    return _environment


def config_path() -> Path | None:
    """$SES_RELAY_CONFIG (inside the package unless absolute), else the package's ses-relay.toml."""
    named = os.environ.get(CONFIG_ENV, "").strip()
    if named:
        path = Path(named)
        return path if path.is_absolute() else PACKAGE_ROOT / path
    bundled = PACKAGE_ROOT / CONFIG_FILE
    return bundled if bundled.is_file() else None


def load_config() -> Config:
    """The configuration, with $SES_RELAY_STATE_URL over [state] url; ConfigError unless it names
    a PostgreSQL state. The state gets a pool of one connection: an invocation applies one
    transaction at a time."""
    config = configuration.load(config_path())
    if not config.state.shared:
        raise ConfigError(
            "state.url",
            f"the Lambda handler needs the shared state: set {configuration.STATE_URL_ENV} "
            "to its postgresql:// URL",
        )
    password = config.state.password
    if password:
        logredact.install([password])
    return config.model_copy(update={"state": config.state.model_copy(update={"pool_size": 1})})


def chunk_size(text: str) -> int:
    if not text.strip():
        return lambda_sqs.CHUNK
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(CHUNK_ENV, f"{text!r} is not a whole number of records, 1 or more")
    return int(text)


async def _invoke(env: Environment, event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    try:
        records = lambda_sqs.records_of(event)
    except lambda_sqs.NotAnSqsBatch as exc:
        log.error("%s", exc)
        raise
    if not records:
        return lambda_sqs.Outcome().response()
    if env.store is None:
        try:
            env.store = await _open(env.config)
        except StoreError as exc:
            return _answer(lambda_sqs.failed_from(records, str(exc)), len(records))
    outcome = await lambda_sqs.apply_records(
        env.store, records, env.config, clock=utcnow, seconds_left=_seconds_left(context),
        margin=env.margin, chunk=env.chunk,
    )  # fmt: skip
    if outcome.store_failed:
        await _close(env)
    return _answer(outcome, len(records))


def _answer(outcome: lambda_sqs.Outcome, total: int) -> dict[str, list[dict[str, str]]]:
    log.log(logging.ERROR if outcome.failed else logging.INFO, "%s", lambda_sqs.summary(outcome, total))
    return outcome.response()


async def _open(config: Config) -> Store:
    """The shared state alone: there is no spool here, and /tmp is only scratch space."""
    scratch = Path(tempfile.gettempdir()) / "ses-relay" / "relay.db"
    return await Store.open(scratch, state=config.state, spool=False)


async def _close(env: Environment) -> None:
    store, env.store = env.store, None
    if store is not None:
        try:
            await store.close()
        except Exception as exc:  # closing what already failed: nothing left to save
            log.debug("closing the failed store: %s", exc)


def _seconds_left(context: Any) -> Callable[[], float | None]:
    """The invocation's remaining time, from the Lambda context (None: no limit, e.g. a local call)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return lambda: None
    return lambda: float(remaining()) / 1000
