"""Shared parts of the benchmarks: processes, a lean SES stand-in, a lean SMTP client.

Everything here exists to keep the measuring apparatus out of the measurement. On
the 2-core development machine the relay gets about one core; whatever else runs
(the load generator, the stand-in SES) competes for the other. So:

- the stand-in SES is a few lines of asyncio in its own process (`ses` verb below),
  not the fault-injecting `tests.support.fake_ses` (a thread per connection and a
  base64 decode per call): it only counts SendRawEmail calls and recipients and
  answers SES's XML at once;
- the SMTP load generator is Postfix's `smtp-source` (C, one process) when it is
  installed, else a raw asyncio client: no smtplib, no pipelining, one message per
  transaction, connections reused for many messages;
- the bare-aiosmtpd ceiling (`bare` verb) runs in its own process too, so that it
  and the relay are measured under the same conditions.

Only 127.0.0.1 is ever used. Every loop is bounded in count and in time.

This file is also a small program: `python bench/common.py ses [--latency S]` and
`python bench/common.py bare` start the stand-ins; each prints `port N` on its first
stdout line and runs until SIGTERM/SIGINT (or its --max-seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
SES_RELAY = str(Path(sys.executable).with_name("ses-relay"))
COMMON = str(Path(__file__).resolve())
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADAVG_AT_START = os.getloadavg()[0]
STORE_FILE = "relay.db"  # cli.STORE_FILE: the store inside the data dir
SUPPRESSED_DOMAIN = "suppressed.example"
SENDER = "bench@example.org"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# --- output -------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries exactly one JSON line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check_quiet() -> None:
    """Say so when the machine was busy before we started: the figures will be low and noisy."""
    if LOADAVG_AT_START > 1.0:
        log(f"warning: 1-minute load average {LOADAVG_AT_START:.2f} before the run: the CPUs are shared")


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, separators=(",", ":")), flush=True)


def run_main(name: str, main: Callable[[], int]) -> int:
    """Run a benchmark's main; a crash still ends in one JSON line (with "error") and exit 1."""
    try:
        return main()
    except KeyboardInterrupt:
        emit({"benchmark": name, "error": "interrupted", "machine": machine()})
        return 130
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        emit({"benchmark": name, "error": f"{type(exc).__name__}: {exc}"[:2000], "machine": machine()})
        return 1


def machine() -> dict[str, Any]:
    """What the figures were measured on, so that a line is comparable later."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        # Other work on the machine skews every figure: a 1-minute load average above
        # ~0.5 before the run started means the figures are not the machine's best.
        "loadavg_1m_at_start": round(LOADAVG_AT_START, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def latency_figures(seconds: Iterable[float], prefix: str) -> dict[str, Any]:
    """p50/p99/max in milliseconds, rounded to what a 2-core box can resolve."""
    values = sorted(seconds)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 3)

    return {
        f"{prefix}_p50_ms": ms(percentile(values, 50)),
        f"{prefix}_p99_ms": ms(percentile(values, 99)),
        f"{prefix}_max_ms": ms(values[-1] if values else None),
        f"{prefix}_samples": len(values),
    }


# --- processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No real AWS credentials or relay settings leak into the children; fake ones sign."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SES_RELAY_", "AWS_"))}
    env.update(FAKE_AWS_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [1] ppid, [11:15] utime stime cutime cstime."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Live descendants of a process (children first), from the ppid field of /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 100_000:
        children = parents.get(todo.pop(0), [])
        out += children
        todo += children
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and everything under it: utime + stime of the live processes, plus
    cutime + cstime (children that exited and were waited for, e.g. Postfix daemons)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        fields = _stat_fields(p)
        if fields is not None:
            total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime of each live thread of a process, by thread id (the main thread's is the pid)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_cpu_figures(pid: int, before: dict[int, float], top: int = 4) -> dict[str, Any]:
    """CPU seconds per thread since `before`: the main thread (the event loop) and the busiest others."""
    after = thread_cpu_seconds(pid)
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    others = sorted((cpu for tid, cpu in spent.items() if tid != pid), reverse=True)
    return {
        "main": round(spent.get(pid, 0.0), 2),
        "busiest_others": [round(c, 2) for c in others[:top]],
        "others_total": round(sum(others), 2),
        "threads": len(after),
    }


def pss_mb(pids: Iterable[int]) -> float:
    """Proportional set size of some processes together: pages they share (libpython, the
    C extensions, libssl) counted once between them, which a sum of RSS counts for each."""
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
    return round(total_kb / 1024.0, 1)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 35.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`: only the process we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def _first_line_port(proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> int:
    """Our stand-ins print `port N` first; anything else (or silence) is a failed start."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline and b"\n" not in buffer:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
        elif proc.poll() is not None:
            break
    line = buffer.split(b"\n", 1)[0].decode(errors="replace")
    if line.startswith("port "):
        return int(line.split()[1])
    stop_process(proc)
    raise RuntimeError(f"{what} did not start (first output: {buffer[:300]!r})")


@dataclass
class StandIn:
    """A stand-in server in a child process (the SES stand-in or the bare SMTP server)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def stats(self, full: bool = False) -> dict[str, Any]:
        """The SES stand-in's counters (GET /__stats; ?full adds per-call times and sizes)."""
        path = "/__stats?full=1" if full else "/__stats"
        with socket.create_connection((LOCALHOST, self.port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


def start_ses_standin(latency: float = 0.0, max_seconds: float = 3600.0) -> StandIn:
    cmd = [sys.executable, COMMON, "ses", "--latency", str(latency), "--max-seconds", str(max_seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env())
    return StandIn(proc, _first_line_port(proc, "SES stand-in"))


def start_bare_smtp(max_seconds: float = 3600.0, uvloop: bool = False) -> StandIn:
    cmd = [sys.executable, COMMON, "bare", "--max-seconds", str(max_seconds)]
    if uvloop:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env())
    return StandIn(proc, _first_line_port(proc, "bare aiosmtpd"))


@dataclass
class Relay:
    """A running `ses-relay serve`; its stdout/stderr go to files in the data dir's parent."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def worker_pid(self) -> int | None:
        """The worker process serve started (sender, notices, feedback), if it is running."""
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"worker" in argv and b"cli" in argv:
                    return pid
        return None

    def tree_cpu_seconds(self) -> float:
        """serve and its worker together (and any worker that exited and was waited for)."""
        return tree_cpu_seconds(self.pid)

    def stop(self) -> int | None:
        return stop_process(self.proc)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def relay_config(
    ses_url: str,
    *,
    connections: int = 50,
    send_rate: float | None = None,
    concurrency: int = 8,
) -> str:
    """The serve configuration of a benchmark: defaults, except what the load needs.

    `send_rate` None means no ceiling (TOML `inf`): the benchmark measures the relay,
    not SES's quota. connections_per_ip is raised because every benchmark client
    comes from 127.0.0.1 (the default of 20 would turn connections 21..50 away).
    """
    rate = "inf" if send_rate is None else repr(float(send_rate))
    return (
        "[ses]\n"
        f'endpoint_url = "{ses_url}"\n'
        f"max_send_rate = {rate}\n"
        f"concurrency = {concurrency}\n"
        "\n[limits]\n"
        f"connections_per_ip = {max(20, connections + 10)}\n"
    )


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


UVLOOP_SITE = "import asyncio\nimport uvloop\n\nasyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"


def site_env(directory: Path, sitecustomize: str) -> dict[str, str]:
    """Environment that runs `sitecustomize` first in a Python child (and in its children).

    Python imports a sitecustomize module from its path at start, before the program:
    a benchmark experiment (uvloop's event loop policy, a patched function) applies
    to serve and its worker without changing the relay.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(sitecustomize)
    return {"PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"}


def start_relay(
    data_dir: Path, config_text: str, *, log_level: str = "info", timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Relay:  # fmt: skip
    """`ses-relay serve` on a free port; waits for its "listening on" line."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text(config_text)
    out_path = data_dir.parent / f"{data_dir.name}.out"
    log_path = data_dir.parent / f"{data_dir.name}.log"
    port = free_port()
    cmd = [SES_RELAY, "serve", "--listen", f"{LOCALHOST}:{port}", "--data-dir", str(data_dir)]
    cmd += ["--config", str(config), "--log-level", log_level]
    with out_path.open("wb") as out, log_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env(env), cwd=data_dir.parent)
    relay = Relay(proc, port, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in out_path.read_text(errors="replace"):
            return relay
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    relay.stop()
    raise RuntimeError(f"ses-relay serve did not start:\n{relay.log_tail()}")


@contextlib.contextmanager
def scratch_dir(keep: bool = False) -> Iterator[Path]:
    """A fresh temporary directory for data dirs and logs; --keep leaves it for inspection."""
    path = Path(tempfile.mkdtemp(prefix="ses-relay-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- the store: bulk-loading suppressions -------------------------------------------


def prepare_store(data_dir: Path, state_url: str | None = None) -> Path:
    """Create the store with the relay's own schema (Store.open runs the migrations), and the
    shared state's in PostgreSQL when `state_url` names one."""
    from relay.config import StateConfig
    from relay.store import Store

    async def go() -> Path:
        state = None if state_url is None else StateConfig(url=state_url)
        store = await Store.open(data_dir / STORE_FILE, state=state)
        await store.close()
        return data_dir / STORE_FILE

    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(go())


def bulk_suppress(db_path: Path, entries: Iterable[tuple[str, str]], reason: str = "bench preload") -> int:
    """Insert (address, class) suppressions straight into the migrated `suppressions` table.

    Why not Store.merge_suppressions: it reads, merges and audits row by row (right
    for an import an admin runs, far too slow for 1,000,000 rows of set-up). The rows
    written here are what merge_suppression would write for a fresh manual entry:
    hard level, cause "manual", never expiring, timestamps in relay.timeutil's format.
    Synchronous writes are off for the load only (the relay is not running yet) and the
    WAL is checkpointed before the relay starts, so it opens a compact database.
    """
    from relay.suppression import Cause, Level
    from relay.timeutil import to_text, utcnow

    now = to_text(utcnow())
    level, cause = int(Level.HARD), str(Cause.MANUAL)
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        db.execute("BEGIN")
        cur = db.executemany(
            "INSERT OR IGNORE INTO suppressions (address, class, level, cause, reason, created_at, "
            "updated_at, expires_at, refused_count) VALUES (?,?,?,?,?,?,?,NULL,0)",
            ((address, klass, level, cause, reason, now, now) for address, klass in entries),
        )
        db.execute("COMMIT")
        count = int(db.execute("SELECT count(*) FROM suppressions").fetchone()[0])
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        del cur
    finally:
        db.close()
    return count


def bulk_suppress_shared(
    state_url: str, entries: Iterable[tuple[str, str]], reason: str = "bench preload"
) -> int:
    """`bulk_suppress` for a shared state: the same rows, into PostgreSQL's `suppressions` (COPY)."""
    import psycopg

    from relay.suppression import Cause, Level
    from relay.timeutil import utcnow

    now = utcnow()
    level, cause = int(Level.HARD), str(Cause.MANUAL)
    with psycopg.connect(state_url) as conn:
        with conn.cursor().copy(
            "COPY suppressions (address, class, level, cause, reason, created_at, updated_at) FROM STDIN"
        ) as copy:
            for address, klass in dict.fromkeys(entries):
                copy.write_row((address, klass, level, cause, reason, now, now))
        row = conn.execute("SELECT count(*) FROM suppressions").fetchone()
    return int(row[0]) if row else 0


def shared_count(state_url: str, table: str) -> int:
    """Rows of `table` in the shared state (what the relays' shippers have brought there)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(state_url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def state_toml(state_url: str | None) -> str:
    """The [state] section of a benchmark relay: a shared state in PostgreSQL, or none."""
    return "" if state_url is None else f'\n[state]\nurl = "{state_url}"\n'


def start_postgres(scratch: Path) -> Any:
    """A private PostgreSQL server for a benchmark's shared state (tests/support/postgres.py)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.postgres import PostgresServer

    (scratch / "pg").mkdir()
    server = PostgresServer(scratch / "pg")
    server.start()
    server.wait_ready()
    return server


def postgres_cpu_seconds(server: Any) -> float:
    """CPU of a PostgresServer: its postmaster and every backend and helper under it (those
    that exited included, as the postmaster waits for them)."""
    try:
        pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return tree_cpu_seconds(pid)


def store_counts(data_dir: Path) -> dict[str, int]:
    """What the relay committed, read from its store (read-only; WAL lets us read while it runs).

    submissions: messages answered 250; recipients_to_send: their recipients not
    suppressed (what SES must receive); refusals: RCPT/DATA refusals counted against
    suppressions (with a shared state they are counted in PostgreSQL: 0 here);
    outbox_backlog: with a shared state, commits not yet shipped to PostgreSQL when read.
    """
    db = sqlite3.connect(f"file:{data_dir / STORE_FILE}?mode=ro", uri=True, timeout=10)
    try:
        one = lambda sql: int(db.execute(sql).fetchone()[0] or 0)  # noqa: E731
        return {
            "submissions": one("SELECT count(*) FROM submissions"),
            "recipients_to_send": one("SELECT count(*) FROM recipients WHERE status != 'suppressed'"),
            "recipients_suppressed_at_data": one(
                "SELECT count(*) FROM recipients WHERE status = 'suppressed'"
            ),
            "refusals": one("SELECT sum(refused_count) FROM suppressions"),
            "outbox_backlog": one("SELECT count(*) FROM outbox"),
        }
    finally:
        db.close()


def suppressed_address(n: int) -> str:
    return f"s{n}@{SUPPRESSED_DOMAIN}"


# --- the load: messages and the plan ---------------------------------------------------


def message_bytes(index: int, recipients: Sequence[str], size: int = 2048) -> bytes:
    """A plain-text message of `size` bytes (headers included), lines of 76 characters.

    No line starts with "." so no dot-stuffing is needed; ends with CRLF.
    """
    head = (
        f"From: Bench <{SENDER}>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: bench message {index}\r\n"
        f"Date: Tue, 24 Nov 2026 04:00:00 +0000\r\n"
        f"Message-ID: <bench.{index}.{os.getpid()}@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = bytearray()
    while len(head) + len(body) + len(line) <= size:
        body += line
    pad = size - len(head) - len(body)
    if pad >= 3:
        body += b"y" * (pad - 2) + b"\r\n"
    return head + bytes(body)


@dataclass(frozen=True)
class Planned:
    recipients: tuple[str, ...]
    suppressed: tuple[bool, ...]  # per recipient: refused at RCPT (class "*")


def plan_messages(
    count: int, *, seed: int = 8, suppressed_share: float = 0.10, pool: int = 10_000,
    min_rcpts: int = 1, max_rcpts: int = 3,
) -> list[Planned]:  # fmt: skip
    """N messages of 1-3 recipients; each recipient suppressed with `suppressed_share`.

    Suppressed recipients come from a pool of `pool` preloaded addresses (so they
    repeat, as real suppressed addresses do); the others are unique fresh addresses.
    """
    rng = random.Random(seed)
    out: list[Planned] = []
    for i in range(count):
        rcpts: list[str] = []
        flags: list[bool] = []
        for j in range(rng.randint(min_rcpts, max_rcpts)):
            if rng.random() < suppressed_share:
                address = suppressed_address(rng.randrange(pool))
                if address in rcpts:
                    address = f"u{i}.{j}@example.net"
                    flags.append(False)
                else:
                    flags.append(True)
            else:
                address = f"u{i}.{j}@example.net"
                flags.append(False)
            rcpts.append(address)
        out.append(Planned(tuple(rcpts), tuple(flags)))
    return out


def smtp_source_recipients(messages: int, per_message: int) -> tuple[int, list[int]]:
    """smtp-source -N numbers recipients 1..m*r as "<n>rcpt@example.net"; every 10th is suppressed.

    Returns (all recipients, the suppressed numbers). With r >= 2 every message keeps
    at least one deliverable recipient unless the sessions interleave RCPTs unluckily.
    """
    total = messages * per_message
    return total, list(range(10, total + 1, 10))


SMTP_SOURCE_RCPT = "rcpt@example.net"


def smtp_source_address(n: int) -> str:
    return f"{n}{SMTP_SOURCE_RCPT}"


# --- the lean asyncio SMTP client ----------------------------------------------------


class SmtpError(RuntimeError):
    pass


class Conn:
    """One SMTP connection speaking the protocol by hand: command, wait for the reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, helo: str = "bench.example.org") -> Conn:
        reader, writer = await asyncio.open_connection(LOCALHOST, port, limit=1 << 16)
        conn = cls(reader, writer)
        code = await conn.reply()
        if code != 220:
            raise SmtpError(f"greeting {code}")
        conn.writer.write(f"EHLO {helo}\r\n".encode())
        if await conn.reply() != 250:
            raise SmtpError("EHLO refused")
        return conn

    async def reply(self) -> int:
        """Read one (possibly multi-line) reply; return its code."""
        for _ in range(100):
            line = await self.reader.readline()
            if len(line) < 4:
                raise SmtpError(f"connection closed or bad reply {line!r}")
            if line[3:4] != b"-":
                return int(line[:3])
        raise SmtpError("reply longer than 100 lines")

    async def command(self, line: bytes) -> int:
        self.writer.write(line)
        return await self.reply()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 2)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


@dataclass
class LoadResult:
    """What a load run saw from the client side."""

    generator: str
    connections: int
    planned: int
    transactions: int = 0  # MAIL transactions finished (DATA answered, or RSET when all refused)
    accepted: int = 0  # 250 to DATA
    all_refused: int = 0  # every RCPT refused: no DATA
    data_refused: int = 0  # DATA answered with something other than 250
    rcpt_refused: int = 0
    rcpt_accepted_in_accepted: int = 0  # recipients SES should see
    errors: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    data_latencies: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe_accepted: int = 0  # smtp-source runs: messages the latency probe got accepted

    def figures(self) -> dict[str, Any]:
        rate = self.transactions / self.seconds if self.seconds > 0 else None
        out: dict[str, Any] = {
            "connections": self.connections,
            "messages": self.planned,
            "transactions": self.transactions,
            "accepted": self.accepted,
            "all_recipients_refused": self.all_refused,
            "data_refused": self.data_refused,
            "rcpt_refused": self.rcpt_refused,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": None if rate is None else round(rate, 1),
        }
        if self.generator == "smtp-source":
            # smtp-source does not say how each transaction went; the relay's store does
            # (see store_counts), and the probe's messages are counted apart.
            for key in ("accepted", "all_recipients_refused", "data_refused", "rcpt_refused"):
                out[key] = None
            out["probe_accepted"] = self.probe_accepted
        out.update(latency_figures(self.data_latencies, "data"))
        if self.timed_out:
            out["timed_out"] = True
        if self.notes:
            out["notes"] = self.notes
        return out


async def _transaction(conn: Conn, index: int, planned: Planned, data: bytes, result: LoadResult) -> None:
    if await conn.command(f"MAIL FROM:<{SENDER}>\r\n".encode()) != 250:
        raise SmtpError("MAIL refused")
    accepted = 0
    for address in planned.recipients:
        if await conn.command(f"RCPT TO:<{address}>\r\n".encode()) == 250:
            accepted += 1
        else:
            result.rcpt_refused += 1
    if accepted == 0:
        await conn.command(b"RSET\r\n")
        result.all_refused += 1
        result.transactions += 1
        return
    if await conn.command(b"DATA\r\n") != 354:
        raise SmtpError("DATA not accepted")
    conn.writer.write(data)
    conn.writer.write(b".\r\n")
    started = time.perf_counter()
    code = await conn.reply()
    result.data_latencies.append(time.perf_counter() - started)
    result.transactions += 1
    if code == 250:
        result.accepted += 1
        result.rcpt_accepted_in_accepted += accepted
    else:
        result.data_refused += 1


async def _worker(
    port: int, plan: Sequence[Planned], bodies: Sequence[bytes], cursor: list[int], deadline: float,
    result: LoadResult,
) -> None:  # fmt: skip
    conn: Conn | None = None
    try:
        while time.monotonic() < deadline:
            index = cursor[0]
            if index >= len(plan):
                break
            cursor[0] = index + 1
            if conn is None:
                conn = await Conn.open(port)
            try:
                await _transaction(conn, index, plan[index], bodies[index % len(bodies)], result)
            except (SmtpError, OSError, asyncio.IncompleteReadError) as exc:
                result.errors += 1
                if len(result.notes) < 5:
                    result.notes.append(f"message {index}: {exc}")
                await conn.close()
                conn = None
    finally:
        if conn is not None:
            await conn.close()


async def asyncio_load(
    port: int, plan: Sequence[Planned], connections: int, max_seconds: float, size: int = 2048
) -> LoadResult:
    """Send `plan` over `connections` concurrent connections; at most `max_seconds`."""
    result = LoadResult("asyncio", connections, len(plan))
    # A handful of distinct bodies, prepared before the clock starts (the To header is
    # informative only: SMTP routes on RCPT, so reusing bodies changes nothing).
    bodies = [message_bytes(i, plan[i].recipients, size) for i in range(min(64, len(plan)))]
    cursor = [0]
    started = time.monotonic()
    deadline = started + max_seconds
    tasks = [
        asyncio.create_task(_worker(port, plan, bodies, cursor, deadline, result)) for _ in range(connections)
    ]
    done, pending = await asyncio.wait(tasks, timeout=max_seconds + 10)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            result.errors += 1
            result.notes.append(f"connection failed: {task.exception()!r}"[:200])
    result.seconds = time.monotonic() - started
    result.timed_out = cursor[0] < len(plan) or bool(pending)
    return result


async def probe_load(
    port: int, stop: asyncio.Event, rate: float, max_seconds: float, size: int
) -> LoadResult:
    """One connection sending 1-recipient messages at most `rate`/s until `stop`: DATA latencies.

    Used beside smtp-source, which reports no per-message timing: the probe's
    messages see the same server under the same load.
    """
    result = LoadResult("probe", 1, 0)
    data = message_bytes(0, ["probe@example.net"], size)
    planned = Planned(("probe@example.net",), (False,))
    deadline = time.monotonic() + max_seconds
    conn = await Conn.open(port)
    try:
        n = 0
        while not stop.is_set() and time.monotonic() < deadline and n < 1_000_000:
            began = time.monotonic()
            await _transaction(conn, n, planned, data, result)
            n += 1
            pause = 1.0 / rate - (time.monotonic() - began)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
    finally:
        await conn.close()
    return result


# --- smtp-source -------------------------------------------------------------------------


def smtp_source_path() -> str | None:
    return shutil.which("smtp-source") or next(
        (p for p in ("/usr/sbin/smtp-source", "/usr/local/sbin/smtp-source") if os.path.exists(p)), None
    )


async def smtp_source_load(
    port: int, messages: int, connections: int, per_message: int, max_seconds: float, size: int = 2048,
    probe_rate: float = 50.0,
) -> LoadResult:  # fmt: skip
    """Postfix's smtp-source: -s sessions, -m messages, -r recipients, -l payload, -d reuse, -N numbered.

    -A keeps it going past the 550s for suppressed recipients. Its counters are not
    per message, so the DATA latency comes from a rate-capped probe connection
    (probe_rate 0: no probe, no latencies).
    """
    exe = smtp_source_path()
    if exe is None:
        raise RuntimeError("smtp-source is not installed")
    result = LoadResult("smtp-source", connections, messages)
    cmd = [
        exe, "-A", "-d", "-N", "-s", str(connections), "-m", str(messages), "-r", str(per_message),
        "-l", str(size), "-f", SENDER, "-t", SMTP_SOURCE_RCPT, "-M", "bench.example.org",
        f"{LOCALHOST}:{port}",
    ]  # fmt: skip
    stop = asyncio.Event()
    probe = (
        asyncio.create_task(probe_load(port, stop, probe_rate, max_seconds, size)) if probe_rate > 0 else None
    )
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=max_seconds)
        result.seconds = time.monotonic() - started
        if proc.returncode != 0:
            result.errors += 1
            result.notes.append(f"smtp-source exited {proc.returncode}: {err.decode(errors='replace')[:300]}")
        else:
            result.transactions = messages
    except TimeoutError:
        proc.kill()
        await proc.wait()
        result.seconds = time.monotonic() - started
        result.timed_out = True
    stop.set()
    note = f"smtp-source sends {per_message} recipients a message"
    if probe is not None:
        try:
            probed = await asyncio.wait_for(probe, 15)
            result.data_latencies = probed.data_latencies
            result.probe_accepted = probed.accepted
        except (SmtpError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            result.notes.append(f"latency probe failed: {exc!r}")
        note += f"; latencies from a probe connection (<= {probe_rate:g} msg/s, not counted in msgs_per_s)"
    result.notes.append(note)
    return result


def choose_generator(requested: str) -> str:
    if requested == "auto":
        return "smtp-source" if smtp_source_path() else "asyncio"
    if requested == "smtp-source" and smtp_source_path() is None:
        raise SystemExit("--generator smtp-source: smtp-source is not installed (apt-get install postfix)")
    return requested


async def run_generator(
    generator: str, port: int, *, plan: Sequence[Planned], connections: int, max_seconds: float,
    size: int = 2048, smtp_source_rcpts: int = 2, probe_rate: float = 50.0,
) -> LoadResult:  # fmt: skip
    """The same load through whichever generator was chosen (probe_rate: see smtp_source_load)."""
    if generator == "smtp-source":
        return await smtp_source_load(
            port, len(plan), connections, smtp_source_rcpts, max_seconds, size, probe_rate=probe_rate
        )
    return await asyncio_load(port, plan, connections, max_seconds, size)


def preload_entries(
    generator: str, messages: int, smtp_source_rcpts: int, pool: int
) -> Iterator[tuple[str, str]]:
    """The suppressions a load needs: the plan's pool, plus smtp-source's every-10th numbered recipient."""
    for n in range(pool):
        yield suppressed_address(n), "*"
    if generator == "smtp-source":
        for n in smtp_source_recipients(messages, smtp_source_rcpts)[1]:
            yield smtp_source_address(n), "*"


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Spy:
    """py-spy sampling one process into a raw (collapsed stacks) file until stopped.

    `--gil` samples only the thread holding the GIL: threads waiting on a queue, a
    socket or the GIL itself are not counted as busy, so a sample is interpreter
    time. What runs with the GIL released (SQLite's own work, fsync, socket
    syscalls) is not in it: thread_cpu_seconds() gives those totals per thread.
    """

    proc: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(cls, pid: int, output: Path, rate: int = 200, max_seconds: float = 600.0) -> Spy:
        exe = py_spy_path()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(output)]
        cmd += ["--rate", str(rate), "--duration", str(int(max_seconds)), "--function", "--gil"]
        log_path = output.with_suffix(".log")
        with log_path.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(0.3)  # attached before the load starts
        return cls(proc, output)

    def failure(self) -> str:
        """Why there is no output: the tail of py-spy's own log."""
        with contextlib.suppress(OSError):
            return f"py-spy: {self.output.with_suffix('.log').read_text(errors='replace')[-300:]}"
        return "py-spy wrote nothing"

    def stop(self) -> None:
        """SIGINT makes py-spy write what it sampled; then it exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class RelayRun:
    """A relay with its own SES stand-in and a fresh data dir."""

    relay: Relay
    ses: StandIn

    def close(self) -> None:
        try:
            self.relay.stop()
        finally:
            self.ses.stop()


def start_relay_run(
    scratch: Path, name: str, entries: Iterable[tuple[str, str]], *, connections: int,
    send_rate: float | None = None, ses_latency: float = 0.0, concurrency: int = 8, log_level: str = "info",
    max_seconds: float = 3600.0, env: dict[str, str] | None = None, state_url: str | None = None,
) -> RelayRun:  # fmt: skip
    """Fresh data dir with the suppressions loaded, the SES stand-in, then `serve`.

    `state_url`: the state in that (fresh) PostgreSQL database, the suppressions loaded there.
    """
    data_dir = scratch / name
    db_path = prepare_store(data_dir, state_url)
    if state_url is None:
        loaded = bulk_suppress(db_path, entries)
    else:
        loaded = bulk_suppress_shared(state_url, entries)
    log(f"{name}: {loaded} suppressions loaded")
    ses = start_ses_standin(ses_latency, max_seconds=max_seconds + 120)
    try:
        config = relay_config(ses.url, connections=connections, send_rate=send_rate, concurrency=concurrency)
        relay = start_relay(data_dir, config + state_toml(state_url), log_level=log_level, env=env)
    except BaseException:
        ses.stop()
        raise
    log(f"{name}: serve pid {relay.pid} on port {relay.port}, SES stand-in pid {ses.pid} on port {ses.port}")
    return RelayRun(relay, ses)


def wait_for_ses(run: RelayRun, want: int, budget: Budget, poll: float = 0.05) -> dict[str, Any]:
    """Poll the stand-in SES until it has `want` recipients, the time is up or the relay exits;
    returns its last counters, with the per-call times ("full")."""
    stats = run.ses.stats()
    for _ in range(10_000_000):
        if stats["recipients"] >= want or budget.left() <= 0 or run.relay.proc.poll() is not None:
            break
        time.sleep(poll)
        stats = run.ses.stats()
    return run.ses.stats(full=True)


class Budget:
    """The run's time bound, shared by its phases."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


# --- the stand-ins (run as child processes) -------------------------------------------------

_TAG = re.compile(rb"Tags\.member\.(\d+)\.Name=submission-id")
_XMLNS = "http://ses.amazonaws.com/doc/2010-12-01/"


class _SesState:
    """Counters of the SES stand-in; answers come from here."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0
        self.recipients = 0
        self.other = 0
        self.times: list[float] = []  # time.monotonic() per call (system-wide clock on Linux)
        self.sizes: list[int] = []  # recipients per call
        self.submissions: set[bytes] = set()
        self.duplicates = 0
        self.ids = 0

    def send_raw(self, body: bytes) -> bytes:
        self.calls += 1
        dests = body.count(b"Destinations.member.")
        self.recipients += dests
        self.times.append(time.monotonic())
        self.sizes.append(dests)
        match = _TAG.search(body)
        if match:
            head = b"Tags.member." + match.group(1) + b".Value="
            start = body.find(head)
            if start >= 0:
                start += len(head)
                end = body.find(b"&", start)
                sid = body[start : end if end >= 0 else len(body)]
                if sid in self.submissions:
                    self.duplicates += 1
                self.submissions.add(sid)
        self.ids += 1
        return (
            f'<SendRawEmailResponse xmlns="{_XMLNS}"><SendRawEmailResult>'
            f"<MessageId>{self.ids:016x}-bench-000000</MessageId></SendRawEmailResult>"
            f"<ResponseMetadata><RequestId>{self.ids}</RequestId></ResponseMetadata>"
            "</SendRawEmailResponse>"
        ).encode()

    def stats(self, full: bool) -> bytes:
        doc: dict[str, Any] = {
            "calls": self.calls,
            "recipients": self.recipients,
            "other_requests": self.other,
            "duplicates": self.duplicates,
            "first": self.times[0] if self.times else None,
            "last": self.times[-1] if self.times else None,
        }
        if full:
            doc["times"] = self.times
            doc["sizes"] = self.sizes
        return json.dumps(doc).encode()

    def answer(self, method: bytes, target: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        if method == b"GET" and target.startswith(b"/__stats"):
            return 200, b"application/json", self.stats(b"full=1" in target)
        if b"Action=SendRawEmail" in body:
            return 200, b"text/xml", self.send_raw(body)
        self.other += 1
        if b"Action=GetSendQuota" in body:
            return (
                200,
                b"text/xml",
                (
                    f'<GetSendQuotaResponse xmlns="{_XMLNS}"><GetSendQuotaResult>'
                    "<SentLast24Hours>0.0</SentLast24Hours><Max24HourSend>1.0E9</Max24HourSend>"
                    "<MaxSendRate>1000000.0</MaxSendRate></GetSendQuotaResult>"
                    "<ResponseMetadata><RequestId>q</RequestId></ResponseMetadata></GetSendQuotaResponse>"
                ).encode(),
            )
        return (
            400,
            b"text/xml",
            (
                f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>InvalidAction</Code>'
                "<Message>not supported by the bench stand-in</Message></Error><RequestId>e</RequestId>"
                "</ErrorResponse>"
            ).encode(),
        )


async def _ses_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _SesState
) -> None:
    try:
        for _ in range(10_000_000):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            length, expect = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"expect" and b"100-continue" in value.lower():
                    expect = True
            if expect:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(length) if length else b""
            if state.latency:
                await asyncio.sleep(state.latency)
            status, ctype, payload = state.answer(method, target, body)
            reason = b"OK" if status == 200 else b"Bad Request"
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nx-amzn-RequestId: r\r\n\r\n"
                % (status, reason, ctype, len(payload))
                + payload
            )
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _serve_until_signal(start: Any, max_seconds: float) -> None:
    server = await start()
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    server.close()


def _ses_main(latency: float, max_seconds: float) -> None:
    state = _SesState(latency)

    async def start() -> asyncio.Server:
        return await asyncio.start_server(
            lambda r, w: _ses_connection(r, w, state), LOCALHOST, 0, limit=64 * 1024 * 1024
        )

    asyncio.run(_serve_until_signal(start, max_seconds))


def _bare_main(max_seconds: float, use_uvloop: bool = False) -> None:
    """aiosmtpd with a handler that answers 250 to everything: the intake's ceiling."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "250 2.0.0 Ok: queued"

    handler = Handler()

    async def start() -> asyncio.Server:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            return SMTP(
                handler, data_size_limit=10 * 1024 * 1024, enable_SMTPUTF8=False, decode_data=False,
                hostname="bare", ident="bare-aiosmtpd",
            )  # fmt: skip

        return await loop.create_server(factory, host=LOCALHOST, port=0)

    asyncio.run(_serve_until_signal(start, max_seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="benchmark stand-ins (run by the bench scripts)")
    parser.add_argument("what", choices=["ses", "bare"])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each SES answer")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long")
    parser.add_argument("--uvloop", action="store_true", help="bare: run on uvloop's event loop")
    args = parser.parse_args(argv)
    if args.what == "ses":
        _ses_main(args.latency, args.max_seconds)
    else:
        _bare_main(args.max_seconds, args.uvloop)


if __name__ == "__main__":
    main()
