"""Benchmark: SMTP in to SES out, measured until the stand-in SES has received every message.

The same load as bench/intake.py (N messages of 2 KB, 1-3 recipients, 10 % of them
suppressed, over C connections) into a real `ses-relay serve` whose SES is a lean
stand-in in its own process (zero latency unless --ses-latency). The clock starts
with the first connection and stops when the stand-in has answered the call that
brings its recipient count to what the relay committed (read from the relay's
store once the load is done: recipients of accepted messages that were not
suppressed), bounded by --max-seconds.

Figures: end-to-end msgs/s (accepted messages / that time), SES calls/s (over the
span between the first and the last call), the intake's own rate, how long the
spool took to drain after the load ended, duplicates the stand-in saw (the same
submission id twice), and the relay's peak RSS.

With --rate R ([ses] max_send_rate = R recipients/s) it also reports how close the
achieved send rate stays to the ceiling: recipients/s over the steady middle of the
sending span (its first and last 10 % left out: the token bucket starts full, and the
tail is a partial second), as a ratio to R, and the highest count in any 1-second
window, as a ratio to R. Pick N so that the run lasts well over 10 s at R, e.g.
`--rate 200 --messages 2000` (about 3,600 recipients, 18 s).

    .venv/bin/python bench/end_to_end.py --messages 2000 --connections 10
    .venv/bin/python bench/end_to_end.py --messages 2000 --connections 10 --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

TARGET_MSGS_PER_S = 500.0
TARGET_RATE_TOLERANCE = 0.05
STEADY_TRIM = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages (default 5000)")
    parser.add_argument("--connections", type=int, default=10, help="concurrent SMTP connections (10)")
    parser.add_argument("--rate", type=float, default=None, help="[ses] max_send_rate, recipients/s")
    parser.add_argument("--concurrency", type=int, default=8, help="[ses] concurrency (default 8)")
    parser.add_argument(
        "--generator", choices=["auto", "smtp-source", "asyncio"], default="auto",
        help="load generator; auto = smtp-source when installed",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes (default 2048)")
    parser.add_argument("--suppressed-share", type=float, default=0.10, help="share of recipients suppressed")
    parser.add_argument(
        "--smtp-source-rcpts", type=int, default=2, help="recipients a message with smtp-source"
    )
    parser.add_argument("--ses-latency", type=float, default=0.0, help="seconds the SES stand-in waits")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--max-seconds", type=float, default=600.0, help="bound on the whole run (600)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.max_seconds <= 0 or args.size < 512 or not 1 <= args.connections <= 500:
        parser.error("--messages and --max-seconds must be positive, --size >= 512, --connections 1..500")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    if not 0 <= args.suppressed_share < 1 or not 1 <= args.smtp_source_rcpts <= 50:
        parser.error("--suppressed-share must be in [0,1), --smtp-source-rcpts 1..50")
    return args


def _peak_1s(times: list[float], sizes: list[int]) -> int:
    """The most recipients in any 1-second window ending at a call."""
    peak, start, running = 0, 0, 0
    for k, t in enumerate(times):
        running += sizes[k]
        while times[start] <= t - 1.0:
            running -= sizes[start]
            start += 1
        peak = max(peak, running)
    return peak


def rate_figures(times: list[float], sizes: list[int], rate: float, load_end: float) -> dict[str, Any]:
    """Achieved recipients/s against the ceiling, over the steady middle and the worst second."""
    out: dict[str, Any] = {"rate_ceiling": rate}
    if len(times) < 10:
        out["rate_note"] = "too few SES calls to judge the rate"
        return out
    first, last = times[0], times[-1]
    span = last - first
    lo, hi = first + STEADY_TRIM * span, last - STEADY_TRIM * span
    i, j = bisect.bisect_left(times, lo), bisect.bisect_right(times, hi)
    window = hi - lo
    recipients = sum(sizes[i:j])
    achieved = recipients / window if window > 0 else None
    out["achieved_rate"] = None if achieved is None else round(achieved, 1)
    out["achieved_ratio"] = None if achieved is None else round(achieved / rate, 3)
    out["steady_window_s"] = round(window, 2)
    # Worst 1-second window, over the whole run (the start included: a token bucket
    # that starts full lets a burst through) and over the steady window alone.
    peak = _peak_1s(times, sizes)
    out["peak_1s_recipients"] = peak
    out["peak_1s_ratio"] = round(peak / rate, 3)
    steady = _peak_1s(times[i:j], sizes[i:j])
    out["peak_1s_ratio_steady"] = round(steady / rate, 3)
    out["within_5pct"] = achieved is not None and abs(achieved / rate - 1.0) <= TARGET_RATE_TOLERANCE
    if load_end > lo and achieved is not None and achieved < rate * (1 - TARGET_RATE_TOLERANCE):
        out["rate_note"] = (
            "the load was still arriving in the steady window: the intake, not the ceiling, set the pace"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.check_quiet()
    generator = common.choose_generator(args.generator)
    budget = common.Budget(args.max_seconds)
    plan = common.plan_messages(args.messages, seed=args.seed, suppressed_share=args.suppressed_share)
    if args.rate is not None:
        expected = args.messages * 2 * (1 - args.suppressed_share) / args.rate
        if expected > args.max_seconds * 0.8:
            common.log(f"warning: ~{expected:.0f} s of sending at {args.rate:g}/s; raise --max-seconds")
    common.log(f"end_to_end: {args.messages} messages over {args.connections} connections, {generator}")
    figures: dict[str, Any] = {"benchmark": "end_to_end", "generator": generator, "messages": args.messages}
    failed = False
    with common.scratch_dir(args.keep) as scratch:
        entries = common.preload_entries(generator, args.messages, args.smtp_source_rcpts, pool=10_000)
        run = common.start_relay_run(
            scratch, "relay", entries, connections=args.connections, send_rate=args.rate,
            ses_latency=args.ses_latency, concurrency=args.concurrency, log_level=args.log_level,
            max_seconds=budget.left(),
        )  # fmt: skip
        try:
            started = time.monotonic()
            cpu_before = run.relay.tree_cpu_seconds()
            load = asyncio.run(
                common.run_generator(
                    generator, run.relay.port, plan=plan, connections=args.connections,
                    max_seconds=budget.left(), size=args.size, smtp_source_rcpts=args.smtp_source_rcpts,
                    probe_rate=0.0,
                )
            )  # fmt: skip
            load_end = time.monotonic()
            committed = common.store_counts(run.relay.data_dir)
            want = committed["recipients_to_send"]
            common.log(
                f"load done in {load.seconds:.1f} s: {committed['submissions']} accepted, "
                f"{want} recipients to send; waiting for the stand-in SES"
            )
            full = common.wait_for_ses(run, want, budget)
            cpu = run.relay.tree_cpu_seconds() - cpu_before
            worker = run.relay.worker_pid()
            complete = full["recipients"] >= want
            finished = full["last"] if complete and full["last"] is not None else time.monotonic()
            e2e = finished - started
            calls_span = (full["last"] - full["first"]) if full["calls"] > 1 else None
            figures.update(
                {
                    "connections": args.connections,
                    "accepted": committed["submissions"],
                    "recipients_to_send": want,
                    "ses_calls": full["calls"],
                    "ses_recipients": full["recipients"],
                    "ses_duplicates": full["duplicates"],
                    "complete": complete,
                    "seconds": round(e2e, 3),
                    "msgs_per_s": round(committed["submissions"] / e2e, 1) if e2e > 0 else None,
                    "ses_calls_per_s": round((full["calls"] - 1) / calls_span, 1) if calls_span else None,
                    "intake_msgs_per_s": load.figures()["msgs_per_s"],
                    "intake_seconds": round(load.seconds, 3),
                    "drain_after_load_s": round(max(0.0, finished - load_end), 3),
                    "load_errors": load.errors,
                    "peak_rss_mb": run.relay.peak_rss_mb(),
                    "worker_peak_rss_mb": common.peak_rss_mb(worker) if worker else None,
                    "relay_cpu_share": round(cpu / e2e, 2) if e2e > 0 else None,
                    "cpu_ms_per_msg": (
                        round(cpu * 1000.0 / committed["submissions"], 3)
                        if committed["submissions"]
                        else None
                    ),
                    "ses_latency_s": args.ses_latency,
                    "concurrency": args.concurrency,
                }
            )
            if load.notes:
                figures["notes"] = load.notes
            if args.rate is not None:
                figures.update(rate_figures(full["times"], full["sizes"], args.rate, load_end))
            elif args.ses_latency == 0:
                figures["target_msgs_per_s_ge_500"] = (figures["msgs_per_s"] or 0) >= TARGET_MSGS_PER_S
            if run.relay.proc.poll() is not None:
                figures["relay_exited"] = run.relay.proc.returncode
            failed = not complete or bool(load.errors or load.timed_out or full["duplicates"])
        finally:
            run.close()
    figures["machine"] = common.machine()
    common.emit(figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(common.run_main("end_to_end", main))
