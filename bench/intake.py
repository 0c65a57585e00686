"""Benchmark: SMTP intake throughput of `ses-relay serve`, and its ratio to bare aiosmtpd.

For each connection count C (--connections 1,10,50): a fresh data dir with the
suppressions preloaded, a lean SES stand-in in its own process, a real `ses-relay
serve` subprocess, then N messages (2 KB, 1-3 recipients, 10 % of recipients
suppressed) over C concurrent SMTP connections. Every 250 is durable: the relay
answers only after its fsync'd commit. The relay's sender drains to the stand-in
meanwhile, in the same process, as in production (--send-rate limits it, to see the
intake alone).

Figures per C: msgs/s (MAIL transactions finished per second of load), p50/p99 of
the DATA reply latency (final "." to the reply), the relay's peak RSS (VmHWM) and the
share of a core it used. --baseline runs the same load against a bare aiosmtpd that
only answers 250 (its own process), and prints ratio_to_bare. --state postgres runs
each load a second time with the state in PostgreSQL (`[state] url`, a private server
started for the run, the spool local as always) and prints its figures beside the
SQLite-only ones (`postgres`, `ratio_postgres_to_sqlite`).

Prints one JSON line on stdout (logs on stderr):
  {"benchmark": "intake", "generator": "smtp-source"|"asyncio", "runs": [{...}, ...], ...}

    .venv/bin/python bench/intake.py --messages 2000 --connections 10,50 --baseline
    .venv/bin/python bench/intake.py --connections 50 --state postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

TARGET_MSGS_PER_S = 1000.0
TARGET_RATIO = 0.70
TARGET_RSS_MB = 150.0
TARGET_POSTGRES_RATIO = 0.90  # the intake with a shared state: within 10 % of SQLite alone


def connection_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not counts or any(c < 1 or c > 500 for c in counts):
        raise argparse.ArgumentTypeError("connection counts must be between 1 and 500")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per run (default 5000)")
    parser.add_argument("--connections", type=connection_counts, default=[1, 10, 50], help="e.g. 1,10,50")
    parser.add_argument("--baseline", action="store_true", help="also measure bare aiosmtpd (ratio_to_bare)")
    parser.add_argument(
        "--state", choices=["sqlite", "postgres"], default="sqlite",
        help="postgres: also run each load with the state in PostgreSQL (a private server), same plan",
    )  # fmt: skip
    parser.add_argument(
        "--generator", choices=["auto", "smtp-source", "asyncio"], default="auto",
        help="load generator; auto = smtp-source when installed",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes (default 2048)")
    parser.add_argument("--suppressed-share", type=float, default=0.10, help="share of recipients suppressed")
    parser.add_argument(
        "--smtp-source-rcpts", type=int, default=2, help="recipients a message with smtp-source"
    )
    parser.add_argument("--send-rate", type=float, default=None, help="[ses] max_send_rate (default: none)")
    parser.add_argument("--ses-latency", type=float, default=0.0, help="seconds the SES stand-in waits")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run (900)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.max_seconds <= 0 or args.size < 512 or not 0 <= args.suppressed_share < 1:
        parser.error("--messages, --max-seconds must be positive, --size >= 512, --suppressed-share in [0,1)")
    if not 1 <= args.smtp_source_rcpts <= 50:
        parser.error("--smtp-source-rcpts must be 1..50")
    return args


def measure_relay(
    args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned], scratch: Path,
    budget: common.Budget, state_url: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    entries = common.preload_entries(generator, args.messages, args.smtp_source_rcpts, pool=10_000)
    name = f"relay-c{connections}" + ("-pg" if state_url else "")
    run = common.start_relay_run(
        scratch, name, entries, connections=connections, send_rate=args.send_rate,
        ses_latency=args.ses_latency, log_level=args.log_level, max_seconds=budget.left(),
        state_url=state_url,
    )  # fmt: skip
    try:
        cpu_before = run.relay.cpu_seconds()
        result = asyncio.run(
            common.run_generator(
                generator, run.relay.port, plan=plan, connections=connections, max_seconds=budget.left(),
                size=args.size, smtp_source_rcpts=args.smtp_source_rcpts,
            )
        )  # fmt: skip
        cpu = run.relay.cpu_seconds() - cpu_before
        figures = result.figures()
        figures["peak_rss_mb"] = run.relay.peak_rss_mb()
        figures["relay_cpu_share"] = round(cpu / result.seconds, 2) if result.seconds else None
        ses = run.ses.stats()
        figures["ses_calls_during_load"] = ses["calls"]
        figures["store"] = common.store_counts(run.relay.data_dir)
        if run.relay.proc.poll() is not None:
            figures["relay_exited"] = run.relay.proc.returncode
            figures.setdefault("notes", []).append(run.relay.log_tail(5))
        return figures
    finally:
        run.close()


def measure_bare(
    args: argparse.Namespace,
    generator: str,
    connections: int,
    plan: list[common.Planned],
    budget: common.Budget,
) -> dict[str, Any]:
    bare = common.start_bare_smtp(max_seconds=budget.left() + 60)
    try:
        cpu_before = common.cpu_seconds(bare.pid)
        result = asyncio.run(
            common.run_generator(
                generator, bare.port, plan=plan, connections=connections, max_seconds=budget.left(),
                size=args.size, smtp_source_rcpts=args.smtp_source_rcpts,
            )
        )  # fmt: skip
        cpu = common.cpu_seconds(bare.pid) - cpu_before
        figures = result.figures()
        figures["server_cpu_share"] = round(cpu / result.seconds, 2) if result.seconds else None
        figures["peak_rss_mb"] = common.peak_rss_mb(bare.pid)
        return figures
    finally:
        bare.stop()


def targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The intake targets (bench/README.md), judged on the runs at 10 and 50 connections."""
    out: dict[str, Any] = {}
    for run in runs:
        c = run["connections"]
        if c not in (10, 50) or run.get("skipped"):
            continue
        rate = run.get("msgs_per_s") or 0.0
        out[f"c{c}_msgs_per_s_ge_{TARGET_MSGS_PER_S:g}"] = rate >= TARGET_MSGS_PER_S
        if "ratio_to_bare" in run:
            out[f"c{c}_ratio_to_bare_ge_{TARGET_RATIO:g}"] = (run["ratio_to_bare"] or 0.0) >= TARGET_RATIO
        if "ratio_postgres_to_sqlite" in run:
            ratio = run["ratio_postgres_to_sqlite"] or 0.0
            out[f"c{c}_postgres_ratio_ge_{TARGET_POSTGRES_RATIO:g}"] = ratio >= TARGET_POSTGRES_RATIO
        rss = run.get("peak_rss_mb")
        if rss is not None:
            out[f"c{c}_peak_rss_lt_{TARGET_RSS_MB:g}mb"] = rss < TARGET_RSS_MB
    return out


@contextlib.contextmanager
def _postgres(state: str, scratch: Path) -> Iterator[Any]:
    """A private PostgreSQL server for the run when `--state postgres`, else None."""
    if state != "postgres":
        yield None
        return
    server = common.start_postgres(scratch)
    try:
        yield server
    finally:
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_quiet()
    generator = common.choose_generator(args.generator)
    budget = common.Budget(args.max_seconds)
    plan = common.plan_messages(args.messages, seed=args.seed, suppressed_share=args.suppressed_share)
    common.log(f"intake: {args.messages} messages, connections {args.connections}, generator {generator}")
    runs: list[dict[str, Any]] = []
    failed = False
    with common.scratch_dir(args.keep) as scratch, _postgres(args.state, scratch) as postgres:
        for connections in args.connections:
            if budget.left() < 5:
                runs.append({"connections": connections, "skipped": "out of time (--max-seconds)"})
                failed = True
                continue
            started = time.monotonic()
            figures = measure_relay(args, generator, connections, plan, scratch, budget)
            common.log(
                f"relay C={connections}: {figures['msgs_per_s']} msg/s, DATA p50 {figures['data_p50_ms']} ms "
                f"p99 {figures['data_p99_ms']} ms, peak RSS {figures['peak_rss_mb']} MB "
                f"({time.monotonic() - started:.1f} s)"
            )
            if postgres is not None and budget.left() >= 5:
                shared = measure_relay(
                    args, generator, connections, plan, scratch, budget, state_url=postgres.database()
                )
                common.log(
                    f"relay C={connections}, state in PostgreSQL: {shared['msgs_per_s']} msg/s, "
                    f"DATA p50 {shared['data_p50_ms']} ms p99 {shared['data_p99_ms']} ms"
                )
                figures["postgres"] = {k: v for k, v in shared.items() if k != "connections"}
                if figures["msgs_per_s"] and shared["msgs_per_s"]:
                    ratio = shared["msgs_per_s"] / figures["msgs_per_s"]
                    figures["ratio_postgres_to_sqlite"] = round(ratio, 3)
                failed |= bool(shared["errors"] or shared.get("timed_out") or "relay_exited" in shared)
            if args.baseline and budget.left() >= 5:
                bare = measure_bare(args, generator, connections, plan, budget)
                common.log(f"bare C={connections}: {bare['msgs_per_s']} msg/s, p99 {bare['data_p99_ms']} ms")
                figures["bare"] = {
                    k: bare[k]
                    for k in (
                        "msgs_per_s", "data_p50_ms", "data_p99_ms", "seconds", "errors", "server_cpu_share",
                        "peak_rss_mb", "timed_out",
                    )
                    if k in bare
                }  # fmt: skip
                if figures["msgs_per_s"] and bare["msgs_per_s"]:
                    figures["ratio_to_bare"] = round(figures["msgs_per_s"] / bare["msgs_per_s"], 3)
                failed |= bool(bare["errors"] or bare.get("timed_out"))
            failed |= bool(figures["errors"] or figures.get("timed_out") or "relay_exited" in figures)
            runs.append(figures)
    common.emit(
        {
            "benchmark": "intake",
            "generator": generator,
            "messages": args.messages,
            "message_bytes": args.size,
            "suppressed_share": args.suppressed_share,
            "send_rate": args.send_rate,
            "state": args.state,
            "runs": runs,
            "targets": targets(runs),
            "machine": common.machine(),
        }
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(common.run_main("intake", main))
