"""Benchmark: RCPT and DATA latency of `ses-relay serve` with a large suppression list.

Loads S suppressions (default 1,000,000) into a fresh store, starts `serve` (SES is
the lean stand-in of bench/common.py, in its own process), then over one SMTP
connection, one command at a time:

(a) RCPT TO a suppressed address (class "*", refused at RCPT with 550), K times;
(b) RCPT TO an address that is not suppressed (250), K times;
    RCPTs go in transactions of --batch, with RSET and a new MAIL between, and the
    first --warmup of each kind are not counted;
(c) DATA-time filtering: 2 KB messages with 1 recipient, with 50, and with 50 of which
    5 are suppressed for the message's class only (they pass RCPT and are dropped at
    DATA, with a notice owed to the sender), interleaved; DATA reply latency of each.

The suppressions are bulk-inserted with sqlite3 into the database that Store.open
has just created and migrated (the relay's own schema; see common.bulk_suppress for
why not through Store.merge_suppressions): 95 % for class "*", 5 % for class
"transactional" (the DATA-time ones). The load time is reported, not counted.

Prints one JSON line on stdout (logs on stderr). --baseline also times the RCPTs
against a bare aiosmtpd (the floor: loopback, the client, aiosmtpd's parsing).

    .venv/bin/python bench/suppression_scale.py --suppressions 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

TARGET_RCPT_P99_MS = 1.0
CLASS_EVERY = 20  # every 20th suppression is for class "transactional" only (DATA-time)
DATA_CLASS = "transactional"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suppressions", type=int, default=1_000_000, help="rows to load (1000000)")
    parser.add_argument("--rcpts", type=int, default=5000, help="RCPTs timed of each kind (5000)")
    parser.add_argument("--warmup", type=int, default=100, help="RCPTs of each kind not timed (100)")
    parser.add_argument("--batch", type=int, default=100, help="RCPTs a transaction, then RSET (100)")
    parser.add_argument("--data-messages", type=int, default=200, help="messages of each DATA kind (200)")
    parser.add_argument("--data-rcpts", type=int, default=50, help="recipients of the large messages (50)")
    parser.add_argument("--baseline", action="store_true", help="also time the RCPTs against bare aiosmtpd")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--max-seconds", type=float, default=600.0, help="bound on the whole run (600)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args(argv)
    if args.suppressions < CLASS_EVERY * 10 or args.max_seconds <= 0:
        parser.error(f"--suppressions must be at least {CLASS_EVERY * 10}; --max-seconds positive")
    if args.rcpts < 1 or args.warmup < 0 or not 1 <= args.batch <= 400 or args.data_messages < 0:
        parser.error("--rcpts >= 1, --warmup >= 0, --batch 1..400, --data-messages >= 0")
    if not 10 <= args.data_rcpts <= 500:
        parser.error("--data-rcpts must be 10..500")
    return args


def entries(count: int) -> Iterator[tuple[str, str]]:
    for n in range(count):
        yield common.suppressed_address(n), (DATA_CLASS if n % CLASS_EVERY == 0 else "*")


def all_class_sample(rng: random.Random, count: int, k: int) -> list[str]:
    out = []
    for _ in range(k):
        n = rng.randrange(count)
        if n % CLASS_EVERY == 0:
            n += 1
        out.append(common.suppressed_address(min(n, count - 1)))
    return out


def class_only_sample(rng: random.Random, count: int, k: int) -> list[str]:
    return [common.suppressed_address(rng.randrange(count // CLASS_EVERY) * CLASS_EVERY) for _ in range(k)]


async def time_rcpts(port: int, addresses: list[str], expect: int, batch: int, warmup: int) -> dict[str, Any]:
    """RCPT latencies over one connection; counts replies other than `expect`."""
    conn = await common.Conn.open(port)
    latencies: list[float] = []
    unexpected = 0
    try:
        for i, address in enumerate(addresses):
            if i % batch == 0:
                if i:
                    await conn.command(b"RSET\r\n")
                if await conn.command(f"MAIL FROM:<{common.SENDER}>\r\n".encode()) != 250:
                    raise common.SmtpError("MAIL refused")
            line = f"RCPT TO:<{address}>\r\n".encode()
            started = time.perf_counter()
            code = await conn.command(line)
            elapsed = time.perf_counter() - started
            if code != expect:
                unexpected += 1
            if i >= warmup:
                latencies.append(elapsed)
        await conn.command(b"RSET\r\n")
    finally:
        await conn.close()
    figures = common.latency_figures(latencies, "rcpt")
    figures["unexpected_replies"] = unexpected
    return figures


async def time_data(
    port: int, kinds: dict[str, list[list[str]]], size: int = 2048
) -> dict[str, dict[str, Any]]:
    """DATA reply latency per kind of message, the kinds interleaved over one connection."""
    conn = await common.Conn.open(port)
    latencies: dict[str, list[float]] = {name: [] for name in kinds}
    refused: dict[str, int] = dict.fromkeys(kinds, 0)
    rounds = max((len(v) for v in kinds.values()), default=0)
    bodies = {name: common.message_bytes(i, v[0][:3], size) for i, (name, v) in enumerate(kinds.items()) if v}
    try:
        for r in range(rounds):
            for name, messages in kinds.items():
                if r >= len(messages):
                    continue
                if await conn.command(f"MAIL FROM:<{common.SENDER}>\r\n".encode()) != 250:
                    raise common.SmtpError("MAIL refused")
                for address in messages[r]:
                    if await conn.command(f"RCPT TO:<{address}>\r\n".encode()) != 250:
                        raise common.SmtpError(f"RCPT {address} refused")
                if await conn.command(b"DATA\r\n") != 354:
                    raise common.SmtpError("DATA refused")
                conn.writer.write(bodies[name] + b".\r\n")
                started = time.perf_counter()
                code = await conn.reply()
                latencies[name].append(time.perf_counter() - started)
                if code != 250:
                    refused[name] += 1
    finally:
        await conn.close()
    out: dict[str, dict[str, Any]] = {}
    for name, values in latencies.items():
        out[name] = common.latency_figures(values, "data")
        out[name]["not_250"] = refused[name]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_quiet()
    budget = common.Budget(args.max_seconds)
    rng = random.Random(args.seed)
    total = args.rcpts + args.warmup
    suppressed = all_class_sample(rng, args.suppressions, total)
    clean = [f"n{i}.{rng.getrandbits(32):08x}@clean.example" for i in range(total)]
    big = args.data_rcpts
    class_only = max(1, big // 10)
    kinds: dict[str, list[list[str]]] = {
        "rcpt_1": [[f"d1.{i}@clean.example"] for i in range(args.data_messages)],
        f"rcpt_{big}": [
            [f"d{big}.{i}.{j}@clean.example" for j in range(big)] for i in range(args.data_messages)
        ],
        f"rcpt_{big}_{class_only}_suppressed_at_data": [
            [f"ds.{i}.{j}@clean.example" for j in range(big - class_only)]
            + class_only_sample(rng, args.suppressions, class_only)
            for i in range(args.data_messages)
        ],
    }
    figures: dict[str, Any] = {"benchmark": "suppression_scale", "suppressions": args.suppressions}
    failed = False
    with common.scratch_dir(args.keep) as scratch:
        data_dir = scratch / "relay"
        started = time.monotonic()
        db_path = common.prepare_store(data_dir)
        loaded = common.bulk_suppress(db_path, entries(args.suppressions))
        figures["load_seconds"] = round(time.monotonic() - started, 2)
        figures["loaded"] = loaded
        figures["db_mb"] = round(db_path.stat().st_size / 1e6, 1)
        common.log(f"loaded {loaded} suppressions in {figures['load_seconds']} s ({figures['db_mb']} MB)")
        ses = common.start_ses_standin(max_seconds=budget.left() + 120)
        try:
            relay = common.start_relay(
                data_dir, common.relay_config(ses.url, connections=5), log_level=args.log_level
            )
            try:
                common.log(f"serve pid {relay.pid} on port {relay.port}")
                left = max(1.0, budget.left())
                figures["rcpt_suppressed"] = asyncio.run(
                    asyncio.wait_for(time_rcpts(relay.port, suppressed, 550, args.batch, args.warmup), left)
                )
                common.log(f"suppressed RCPT: {figures['rcpt_suppressed']}")
                left = max(1.0, budget.left())
                figures["rcpt_not_suppressed"] = asyncio.run(
                    asyncio.wait_for(time_rcpts(relay.port, clean, 250, args.batch, args.warmup), left)
                )
                common.log(f"clean RCPT: {figures['rcpt_not_suppressed']}")
                if args.data_messages:
                    left = max(1.0, budget.left())
                    figures["data"] = asyncio.run(asyncio.wait_for(time_data(relay.port, kinds), left))
                    common.log(f"DATA: {figures['data']}")
                    one, many = figures["data"]["rcpt_1"], figures["data"][f"rcpt_{big}"]
                    if one["data_p50_ms"] is not None and many["data_p50_ms"] is not None:
                        extra = many["data_p50_ms"] - one["data_p50_ms"]
                        figures["data_filter_cost_p50_ms"] = round(extra, 3)
                        figures["data_filter_cost_per_rcpt_us"] = round(extra * 1000 / (big - 1), 1)
                figures["peak_rss_mb"] = relay.peak_rss_mb()
                figures["store"] = common.store_counts(data_dir)
                if relay.proc.poll() is not None:
                    figures["relay_exited"] = relay.proc.returncode
                    failed = True
            finally:
                relay.stop()
        finally:
            ses.stop()
        if args.baseline and budget.left() > 5:
            bare = common.start_bare_smtp(max_seconds=budget.left() + 60)
            try:
                figures["bare_rcpt"] = asyncio.run(
                    asyncio.wait_for(
                        time_rcpts(bare.port, clean, 250, args.batch, args.warmup), max(1.0, budget.left())
                    )
                )
            finally:
                bare.stop()
    p99s = [figures.get(k, {}).get("rcpt_p99_ms") for k in ("rcpt_suppressed", "rcpt_not_suppressed")]
    figures["target_rcpt_p99_lt_1ms"] = all(p is not None and p < TARGET_RCPT_P99_MS for p in p99s)
    failed |= any(
        figures.get(k, {}).get("unexpected_replies") for k in ("rcpt_suppressed", "rcpt_not_suppressed")
    )
    failed |= any(v.get("not_250") for v in figures.get("data", {}).values())
    figures["machine"] = common.machine()
    common.emit(figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(common.run_main("suppression_scale", main))
