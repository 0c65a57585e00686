"""Shared fixtures: real processes, real sockets on 127.0.0.1, moto as an HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "ses"  # real SES and SNS payloads
SES_RELAY = str(Path(sys.executable).with_name("ses-relay"))

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SES_RELAY_", "AWS_"))}
    env.update(FAKE_AWS_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    data_dir: Path,
    config: Path | None = None,
    check: bool = False,
    env: dict[str, str] | None = None,
    **kw: Any,
):
    """Run `ses-relay ARGS --data-dir D [--config C]` as a real process (`env`: added variables)."""
    cmd = [SES_RELAY, *args, "--data-dir", str(data_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=child_env(env), timeout=60, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}: {result.stderr}")
    return result


def cli_json(
    *args: str, data_dir: Path, config: Path | None = None, env: dict[str, str] | None = None
) -> Any:
    result = run_cli(*args, "--json", data_dir=data_dir, config=config, check=True, env=env)
    return json.loads(result.stdout)


@dataclass
class Relay:
    """A running `ses-relay serve` process."""

    data_dir: Path
    config: Path
    port: int
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None  # variables added to the relay's environment, and its CLI's

    def cli(self, *args: str, check: bool = False):
        return run_cli(*args, data_dir=self.data_dir, config=self.config, check=check, env=self.env)

    def json(self, *args: str) -> Any:
        return cli_json(*args, data_dir=self.data_dir, config=self.config, env=self.env)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return "".join(self.output)

    def wait_log(self, text: str, count: int = 1, timeout: float = 15.0) -> bool:
        """True once `text` has appeared `count` times in the relay's output: log lines
        arrive through a pipe, a little after the SMTP reply that they explain."""
        wait_until(lambda: self.log().count(text) >= count, timeout=timeout, what=f"{text!r} in the log")
        return True


def spawn_until(
    cmd: list[str], marker: str, *, env: dict[str, str] | None = None, what: str = "process",
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `cmd` and return once a line of its output contains `marker`.

    Output (stdout and stderr together) keeps being collected into the returned list
    by a thread, so tests can read the process's log later.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(env)
    )
    output: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if marker in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pytest.fail(f"{what} did not start:\n{''.join(output)}")
    return proc, output


def start_relay(
    data_dir: Path,
    config_text: str = "",
    *,
    sandbox: bool = False,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Relay:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text(config_text)
    port = port or free_port()
    cmd = [SES_RELAY, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    cmd += ["--config", str(config)]
    if sandbox:
        cmd.append("--sandbox")
    proc, output = spawn_until(cmd, "listening on", env=env, what="relay")
    return Relay(data_dir, config, port, proc, output, env)


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Any]:
    """Start relays with `relay_factory(config_text, sandbox=..., name=...)`; all stopped at the end."""
    started: list[Relay] = []

    def factory(config_text: str = "", *, sandbox: bool = False, name: str = "data", **kw: Any) -> Relay:
        relay = start_relay(tmp_path / name, config_text, sandbox=sandbox, **kw)
        started.append(relay)
        return relay

    yield factory
    for relay in started:
        relay.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto as a real HTTP server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- PostgreSQL: one private server for the session, a fresh database for each test -----------

PG_TEMPLATE = "ses_relay_template"  # migrated once; each test's database is a copy of it


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A private PostgreSQL server on 127.0.0.1 (tests/support/postgres.py), for the whole session."""
    from tests.support.postgres import PostgresServer

    server = PostgresServer.started()
    try:
        _migrated_template(server)
        yield server
    finally:
        server.cleanup()


def _migrated_template(server: Any) -> None:
    import psycopg
    from psycopg.rows import dict_row

    from relay.store.postgres import migrate

    url = server.database(PG_TEMPLATE)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        migrate(conn)


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A fresh database with ses-relay's schema, dropped after the test; yields its URL."""
    url = pg_server.database(template=PG_TEMPLATE)
    yield url
    pg_server.drop(url.rsplit("/", 1)[1])


@pytest.fixture
def pg_empty_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database (no schema), dropped after the test; yields its URL."""
    url = pg_server.database()
    yield url
    pg_server.drop(url.rsplit("/", 1)[1])
