"""Benchmark: SMTP intake of `ses-relay serve` beside bare aiosmtpd and Postfix, in one run.

For each connection count C (--connections 1,10,50): a fresh data dir with the
suppressions preloaded, a lean SES stand-in in its own process, a real `ses-relay
serve` subprocess (and the worker it starts), then N messages (2 KB, 1-3 recipients,
10 % of recipients suppressed) over C concurrent SMTP connections. Every 250 is
durable: the relay answers only after its fsync'd commit. The relay's worker sends
to the stand-in meanwhile, as in production (--send-rate limits it, to see the
intake alone); once the load is done the run waits until the stand-in has every
recipient, for the end-to-end figure.

Figures per C: msgs/s (MAIL transactions finished per second of load), p50/p99 of
the DATA reply latency (final "." to the reply), end-to-end msgs/s (until SES has
everything), CPU per message of serve and its worker together (load and drain), the
peak RSS of each, and the share of a core the intake used.

--baseline runs the same load against a bare aiosmtpd that only answers 250 (its own
process): ratio_to_bare. --postfix runs it against a private Postfix instance
relaying to smtp-sink (bench/postfix.py): ratio_to_postfix. --uvloop adds bare
aiosmtpd on uvloop, --relay-uvloop the relay on uvloop (an experiment: a
sitecustomize sets the event loop policy; the relay itself does not choose uvloop).
--relay-site FILE (repeatable) adds the relay run with FILE as the sitecustomize
of serve and its worker, "relay+<file stem>": a patch to try before making it
(bench/experiments/ has some).
--state postgres runs each load a second time with the state in PostgreSQL (`[state]
url`: a private server for the run, tests/support/postgres.py, a fresh database each
time; the spool local as always): `postgres`, `ratio_postgres_to_sqlite`.
--repeat K runs every server K times, interleaved, and reports medians.

Prints one JSON line on stdout (logs on stderr):
  {"benchmark": "intake", "generator": "smtp-source"|"asyncio", "runs": [{...}, ...], ...}

    .venv/bin/python bench/intake.py --messages 5000 --connections 10,50 --baseline --postfix --repeat 5
    .venv/bin/python bench/intake.py --messages 3000 --connections 50 --state postgres --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, postfix

TARGET_MSGS_PER_S = 1000.0
TARGET_RATIO = 0.70  # intake / bare aiosmtpd
TARGET_RATIO_POSTFIX = 1.5  # intake / Postfix
TARGET_E2E_RATIO = 0.60  # end to end / bare aiosmtpd
TARGET_CPU_MS = 1.5  # serve + worker, per message, end to end
TARGET_RSS_MB = 100.0  # serve + worker, peak
TARGET_POSTGRES_RATIO = 0.90  # intake with the state in PostgreSQL / SQLite alone, c=50
# The figures that are medians over --repeat rounds (the rest come from the median round).
MEDIAN_KEYS = (
    "msgs_per_s", "data_p50_ms", "data_p99_ms", "e2e_msgs_per_s", "cpu_ms_per_msg", "peak_rss_mb",
    "peak_rss_mb_both", "pss_mb_both", "pss_mb", "server_cpu_share", "relay_cpu_share",
)  # fmt: skip


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
        "--postfix", action="store_true", help="also measure a private Postfix (ratio_to_postfix)"
    )
    parser.add_argument("--uvloop", action="store_true", help="also measure bare aiosmtpd on uvloop")
    parser.add_argument("--relay-uvloop", action="store_true", help="also measure the relay on uvloop")
    parser.add_argument(
        "--relay-site", type=Path, action="append", default=[], metavar="FILE",
        help="also measure the relay with FILE as its sitecustomize (an experiment; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--state", choices=["sqlite", "postgres"], default="sqlite",
        help="postgres: also run the relay with the state in PostgreSQL (a private server)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="rounds per connection count; medians (1)")
    parser.add_argument("--no-drain", action="store_true", help="skip waiting for SES (no end-to-end figure)")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR",
        help="py-spy serve and its worker during the first relay round (raw stacks into DIR)",
    )  # fmt: skip
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second (200)")
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
    if not 1 <= args.repeat <= 25:
        parser.error("--repeat must be 1..25")
    if (args.uvloop or args.relay_uvloop) and not common.uvloop_available():
        parser.error("--uvloop/--relay-uvloop: uvloop is not installed (pip install uvloop)")
    for site in args.relay_site:
        if not site.is_file():
            parser.error(f"--relay-site: {site} is not a file")
    if len({site.stem for site in args.relay_site}) != len(args.relay_site):
        parser.error("--relay-site: the files need different names (the stem names the series)")
    if args.profile is not None and common.py_spy_path() is None:
        parser.error("--profile: py-spy is not installed (pip install py-spy)")
    return args


def _wait_worker(relay: common.Relay, seconds: float = 10.0) -> int | None:
    """serve starts its worker as it starts listening; give it a moment to appear."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = relay.worker_pid()
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def measure_relay(
    args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned], scratch: Path,
    budget: common.Budget, name: str, *, site: str | None = None, profile: Path | None = None,
    postgres: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """The relay under the load, then (unless --no-drain or --send-rate) until SES has everything.

    With `profile`, py-spy samples serve and its worker from just before the load to the
    end of the drain (raw collapsed stacks, `<name>-serve.txt` and `<name>-worker.txt`).
    With `postgres` (a PostgresServer), the state is in a fresh database of that server, and
    the server's CPU is measured over the same span as the relay's.
    """
    state_url = postgres.database() if postgres is not None else None
    entries = common.preload_entries(generator, args.messages, args.smtp_source_rcpts, pool=10_000)
    run = common.start_relay_run(
        scratch, name, entries, connections=connections, send_rate=args.send_rate,
        ses_latency=args.ses_latency, log_level=args.log_level, max_seconds=budget.left(),
        env=common.site_env(scratch / f"{name}-site", site) if site is not None else None,
        state_url=state_url,
    )  # fmt: skip
    spies: list[common.Spy] = []
    try:
        worker = _wait_worker(run.relay)
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            spies.append(common.Spy.start(run.relay.pid, profile / f"{name}-serve.txt", args.profile_rate))
            if worker is not None:
                spies.append(common.Spy.start(worker, profile / f"{name}-worker.txt", args.profile_rate))
        threads_before = {pid: common.thread_cpu_seconds(pid) for pid in (run.relay.pid, worker) if pid}
        serve_before = run.relay.cpu_seconds()
        worker_before = common.cpu_seconds(worker) if worker else 0.0
        cpu_before = run.relay.tree_cpu_seconds()
        server_before = common.postgres_cpu_seconds(postgres) if postgres is not None else 0.0
        started = time.monotonic()
        result = asyncio.run(
            common.run_generator(
                generator, run.relay.port, plan=plan, connections=connections, max_seconds=budget.left(),
                size=args.size, smtp_source_rcpts=args.smtp_source_rcpts,
            )
        )  # fmt: skip
        load_end = time.monotonic()
        serve_load = run.relay.cpu_seconds() - serve_before
        figures = result.figures()
        figures["relay_cpu_share"] = round(serve_load / result.seconds, 2) if result.seconds else None
        figures["ses_calls_during_load"] = run.ses.stats()["calls"]
        store = common.store_counts(run.relay.data_dir)
        figures["store"] = store
        submissions = store["submissions"]
        load_accepted = submissions - result.probe_accepted
        if not args.no_drain and args.send_rate is None:
            full = common.wait_for_ses(run, store["recipients_to_send"], budget)
            complete = full["recipients"] >= store["recipients_to_send"]
            finished = full["last"] if complete and full["last"] is not None else time.monotonic()
            e2e = finished - started
            figures.update(
                {
                    # The load's own messages (not the latency probe's), as msgs_per_s counts them.
                    "e2e_msgs_per_s": round(load_accepted / e2e, 1) if e2e > 0 else None,
                    "e2e_seconds": round(e2e, 3),
                    "e2e_complete": complete,
                    "drain_after_load_s": round(max(0.0, finished - load_end), 3),
                    "ses_calls": full["calls"],
                    "ses_duplicates": full["duplicates"],
                }
            )
        if state_url is not None:
            # What the shipper had brought to PostgreSQL by then: it keeps pace, or not.
            figures["shared_submissions"] = common.shared_count(state_url, "submissions")
        cpu = run.relay.tree_cpu_seconds() - cpu_before
        if postgres is not None:
            server = common.postgres_cpu_seconds(postgres) - server_before
            figures["postgres_server_cpu_s"] = round(server, 2)
            figures["cpu_ms_per_msg_with_server"] = (
                round((cpu + server) * 1000.0 / submissions, 3) if submissions else None
            )
        for spy in spies:
            spy.stop()
        if spies:
            figures["thread_cpu_s"] = {
                "serve": common.thread_cpu_figures(run.relay.pid, threads_before[run.relay.pid]),
                "worker": common.thread_cpu_figures(worker, threads_before[worker]) if worker else None,
            }
            figures["profiled"] = [str(spy.output) if spy.output.exists() else spy.failure() for spy in spies]
        figures["cpu_ms_per_msg"] = round(cpu * 1000.0 / submissions, 3) if submissions else None
        figures["cpu_s"] = {
            "serve": round(run.relay.cpu_seconds() - serve_before, 2),
            "worker": round(common.cpu_seconds(worker) - worker_before, 2) if worker else None,
            "both": round(cpu, 2),
        }
        figures["pss_mb_both"] = common.pss_mb([run.relay.pid, *([worker] if worker else [])])
        figures["peak_rss_mb"] = run.relay.peak_rss_mb()
        figures["worker_peak_rss_mb"] = common.peak_rss_mb(worker) if worker else None
        figures["peak_rss_mb_both"] = round(
            (figures["peak_rss_mb"] or 0) + (figures["worker_peak_rss_mb"] or 0), 1
        )
        if run.relay.proc.poll() is not None:
            figures["relay_exited"] = run.relay.proc.returncode
            figures.setdefault("notes", []).append(run.relay.log_tail(5))
        return figures
    finally:
        for spy in spies:
            spy.stop()
        run.close()


def measure_bare(
    args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned],
    budget: common.Budget, *, uvloop: bool = False,
) -> dict[str, Any]:  # fmt: skip
    bare = common.start_bare_smtp(max_seconds=budget.left() + 60, uvloop=uvloop)
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


def measure_postfix(
    args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned],
    budget: common.Budget,
) -> dict[str, Any]:  # fmt: skip
    """A private Postfix under the same load, then until smtp-sink has every message."""
    instance = postfix.start(budget.left() + 60, keep=args.keep)
    try:
        cpu_before = instance.cpu_seconds()
        started = time.monotonic()
        result = asyncio.run(
            common.run_generator(
                generator, instance.port, plan=plan, connections=connections, max_seconds=budget.left(),
                size=args.size, smtp_source_rcpts=args.smtp_source_rcpts,
            )
        )  # fmt: skip
        load_end = time.monotonic()
        cpu_load = instance.cpu_seconds() - cpu_before
        figures = result.figures()
        figures["server_cpu_share"] = round(cpu_load / result.seconds, 2) if result.seconds else None
        figures["processes"] = instance.processes()
        figures["pss_mb"] = instance.pss_mb()
        # Postfix refuses nothing here: every transaction the generator finished was a 250.
        load_accepted = result.accepted if generator == "asyncio" else result.transactions
        accepted = load_accepted + result.probe_accepted
        finished = instance.wait_drained(accepted, budget)
        e2e = (finished if finished is not None else time.monotonic()) - started
        figures.update(
            {
                "e2e_msgs_per_s": round(load_accepted / e2e, 1) if e2e > 0 else None,
                "e2e_seconds": round(e2e, 3),
                "e2e_complete": finished is not None,
                "drain_after_load_s": round(max(0.0, (finished or time.monotonic()) - load_end), 3),
                "sink_messages": instance.delivered(),
                "queue_files_left": instance.queued(),
            }
        )
        cpu = instance.cpu_seconds() - cpu_before
        figures["cpu_ms_per_msg"] = round(cpu * 1000.0 / accepted, 3) if accepted else None
        if finished is None:
            figures.setdefault("notes", []).append(instance.log_tail(5))
        return figures
    finally:
        instance.stop()


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median msgs/s (its details), with MEDIAN_KEYS as medians over all rounds."""
    if len(rounds) == 1:
        return rounds[0]
    rated = sorted((r for r in rounds if r.get("msgs_per_s")), key=lambda r: r["msgs_per_s"])
    out = dict(rated[(len(rated) - 1) // 2] if rated else rounds[0])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = round(statistics.median(values), 3)
            out[f"{key}_rounds"] = [r.get(key) for r in rounds]
    out["rounds"] = len(rounds)
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


# What the line keeps of the servers compared with the relay.
COMPARED = (
    "msgs_per_s", "data_p50_ms", "data_p99_ms", "seconds", "errors", "server_cpu_share", "peak_rss_mb",
    "timed_out", "e2e_msgs_per_s", "e2e_complete", "drain_after_load_s", "cpu_ms_per_msg", "processes",
    "pss_mb", "sink_messages", "queue_files_left", "rounds", "msgs_per_s_rounds", "e2e_msgs_per_s_rounds",
    "cpu_ms_per_msg_rounds", "peak_rss_mb_both", "pss_mb_both", "cpu_s", "relay_cpu_share", "notes",
)  # fmt: skip


def measure_one(
    name: str, args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned],
    scratch: Path, budget: common.Budget, round_no: int, postgres: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """One server (relay, postgres, relay_uvloop, relay+<site>, bare, bare_uvloop, postfix) under the
    load, once. `postgres`: the relay with its state in a fresh database of that server."""
    if name == "postgres":
        data_dir = f"relay-postgres-c{connections}-r{round_no}"
        return measure_relay(args, generator, connections, plan, scratch, budget, data_dir, postgres=postgres)
    if name.startswith("relay"):
        site = None
        if name == "relay_uvloop":
            site = common.UVLOOP_SITE
        elif name.startswith("relay+"):
            site = next(f for f in args.relay_site if f.stem == name[len("relay+") :]).read_text()
        data_dir = f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}-c{connections}-r{round_no}"
        profile = args.profile if round_no == 0 and name == "relay" else None
        return measure_relay(
            args, generator, connections, plan, scratch, budget, data_dir, site=site, profile=profile
        )
    if name in ("bare", "bare_uvloop"):
        return measure_bare(args, generator, connections, plan, budget, uvloop=name == "bare_uvloop")
    if name == "postfix":
        return measure_postfix(args, generator, connections, plan, budget)
    raise ValueError(f"unknown server {name!r}")


def measure_connections(
    args: argparse.Namespace, generator: str, connections: int, plan: list[common.Planned], scratch: Path,
    budget: common.Budget, postgres: Any = None,
) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Every server under the same load, --repeat times interleaved; (figures, failed)."""
    series: dict[str, list[dict[str, Any]]] = {}
    failed = False
    names = ["relay"] + [
        name
        for name, wanted in (
            ("postgres", postgres is not None), ("bare", args.baseline), ("bare_uvloop", args.uvloop),
            ("relay_uvloop", args.relay_uvloop), ("postfix", args.postfix),
        )
        if wanted
    ]  # fmt: skip
    names += [f"relay+{site.stem}" for site in args.relay_site]
    for k in range(args.repeat):
        for name in names:
            if budget.left() < 5:
                failed = True
                continue
            started = time.monotonic()
            figures = measure_one(name, args, generator, connections, plan, scratch, budget, k, postgres)
            series.setdefault(name, []).append(figures)
            failed |= bool(figures["errors"] or figures.get("timed_out") or "relay_exited" in figures)
            failed |= figures.get("e2e_complete") is False or bool(figures.get("ses_duplicates"))
            common.log(
                f"{name} C={connections} round {k + 1}/{args.repeat}: {figures['msgs_per_s']} msg/s, "
                f"e2e {figures.get('e2e_msgs_per_s')} msg/s, cpu {figures.get('cpu_ms_per_msg')} ms/msg, "
                f"DATA p50 {figures['data_p50_ms']} ms ({time.monotonic() - started:.1f} s)"
            )
    if "relay" not in series:
        return {"connections": connections, "skipped": "out of time (--max-seconds)"}, True
    out = median_of(series["relay"])
    if "relay" in series and len(series["relay"]) > 1:
        out["relay_rounds"] = [
            {k: r.get(k) for k in ("msgs_per_s", "e2e_msgs_per_s", "cpu_ms_per_msg", "peak_rss_mb_both")}
            for r in series["relay"]
        ]
    for name in series:
        if name != "relay":
            med = median_of(series[name])
            out[name] = {k: med[k] for k in COMPARED if k in med}
    out["ratios_by_round"] = ratios_by_round(series)
    rate = out.get("msgs_per_s")
    if "bare" in out:
        out["ratio_to_bare"] = _ratio(rate, out["bare"]["msgs_per_s"])
        out["e2e_ratio_to_bare"] = _ratio(out.get("e2e_msgs_per_s"), out["bare"]["msgs_per_s"])
    if "postgres" in out:
        # The same relay with its state in PostgreSQL: the spool is local in both, so the
        # intake should barely notice (the shipper and the mirror are what is added).
        shared = median_of(series["postgres"])
        kept = (
            "store",
            "shared_submissions",
            "ses_duplicates",
            "postgres_server_cpu_s",
            "cpu_ms_per_msg_with_server",
        )
        out["postgres"].update({k: shared.get(k) for k in kept})
        out["ratio_postgres_to_sqlite"] = _ratio(out["postgres"]["msgs_per_s"], rate)
        out["e2e_ratio_postgres_to_sqlite"] = _ratio(
            out["postgres"].get("e2e_msgs_per_s"), out.get("e2e_msgs_per_s")
        )
    if "postfix" in out:
        out["ratio_to_postfix"] = _ratio(rate, out["postfix"]["msgs_per_s"])
        out["e2e_ratio_to_postfix"] = _ratio(out.get("e2e_msgs_per_s"), out["postfix"]["e2e_msgs_per_s"])
        if "bare" in out:
            out["postfix"]["ratio_to_bare"] = _ratio(out["postfix"]["msgs_per_s"], out["bare"]["msgs_per_s"])
    if "bare_uvloop" in out and "bare" in out:
        out["bare_uvloop"]["gain_over_bare"] = _ratio(
            out["bare_uvloop"]["msgs_per_s"], out["bare"]["msgs_per_s"]
        )
    for name in series:
        if name.startswith("relay_") or name.startswith("relay+"):
            out[name]["gain_over_relay"] = _ratio(out[name]["msgs_per_s"], rate)
            out[name]["e2e_gain_over_relay"] = _ratio(
                out[name].get("e2e_msgs_per_s"), out.get("e2e_msgs_per_s")
            )
            out[name]["cpu_over_relay"] = _ratio(out[name].get("cpu_ms_per_msg"), out.get("cpu_ms_per_msg"))
    return out, failed


def ratios_by_round(series: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The relay against bare aiosmtpd and Postfix within each round (minutes apart, not the
    whole run): steadier than the ratio of medians when other work comes and goes. And the
    relay on PostgreSQL against the relay alone, the same way."""
    relay = series.get("relay", [])
    out: dict[str, Any] = {}
    pairs = zip(series.get("postgres", []), relay, strict=False)
    shared = [_ratio(a.get("msgs_per_s"), b.get("msgs_per_s")) for a, b in pairs]
    if shared:
        out["postgres_to_sqlite"] = shared
        known = [v for v in shared if v is not None]
        out["postgres_to_sqlite_median"] = round(statistics.median(known), 3) if known else None
    for other, key, label in (
        ("bare", "msgs_per_s", "to_bare"), ("postfix", "msgs_per_s", "to_postfix"),
        ("bare", "e2e_msgs_per_s", "e2e_to_bare"), ("postfix", "e2e_msgs_per_s", "e2e_to_postfix"),
    ):  # fmt: skip
        theirs = series.get(other, [])
        mine_key = "e2e_msgs_per_s" if key == "e2e_msgs_per_s" else "msgs_per_s"
        their_key = "msgs_per_s" if other == "bare" else key
        values = [_ratio(a.get(mine_key), b.get(their_key)) for a, b in zip(relay, theirs, strict=False)]
        if values:
            out[label] = values
            known = [v for v in values if v is not None]
            out[f"{label}_median"] = round(statistics.median(known), 3) if known else None
    return out


def targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets (bench/README.md), judged on the runs at 10 and 50 connections."""
    out: dict[str, Any] = {}
    for run in runs:
        c = run["connections"]
        if c not in (10, 50) or run.get("skipped"):
            continue
        rate = run.get("msgs_per_s") or 0.0
        out[f"c{c}_msgs_per_s_ge_{TARGET_MSGS_PER_S:g}"] = rate >= TARGET_MSGS_PER_S
        if run.get("ratio_to_bare") is not None:
            out[f"c{c}_ratio_to_bare_ge_{TARGET_RATIO:g}"] = run["ratio_to_bare"] >= TARGET_RATIO
        if run.get("ratio_to_postfix") is not None:
            out[f"c{c}_ratio_to_postfix_ge_{TARGET_RATIO_POSTFIX:g}"] = (
                run["ratio_to_postfix"] >= TARGET_RATIO_POSTFIX
            )
        if c != 50:
            continue
        if run.get("e2e_ratio_to_bare") is not None:
            out[f"c{c}_e2e_ratio_to_bare_ge_{TARGET_E2E_RATIO:g}"] = (
                run["e2e_ratio_to_bare"] >= TARGET_E2E_RATIO
            )
        if run.get("cpu_ms_per_msg") is not None and run.get("e2e_msgs_per_s") is not None:
            out[f"c{c}_cpu_ms_per_msg_le_{TARGET_CPU_MS:g}"] = run["cpu_ms_per_msg"] <= TARGET_CPU_MS
        if run.get("peak_rss_mb_both"):
            out[f"c{c}_peak_rss_both_lt_{TARGET_RSS_MB:g}mb"] = run["peak_rss_mb_both"] < TARGET_RSS_MB
        if run.get("ratio_postgres_to_sqlite") is not None:
            out[f"c{c}_postgres_ratio_ge_{TARGET_POSTGRES_RATIO:g}"] = (
                run["ratio_postgres_to_sqlite"] >= TARGET_POSTGRES_RATIO
            )
    return out


@contextlib.contextmanager
def _postgres(state: str, scratch: Path) -> Iterator[Any]:
    """A private PostgreSQL server for the run with `--state postgres`, else None."""
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
    if args.postfix and (why := postfix.unavailable()) is not None:
        common.log(f"--postfix: skipped: {why}")
        args.postfix = False
        skipped_postfix: str | None = why
    else:
        skipped_postfix = None
    budget = common.Budget(args.max_seconds)
    plan = common.plan_messages(args.messages, seed=args.seed, suppressed_share=args.suppressed_share)
    common.log(
        f"intake: {args.messages} messages, connections {args.connections}, generator {generator}, "
        f"{args.repeat} round(s)"
    )
    runs: list[dict[str, Any]] = []
    failed = False
    with common.scratch_dir(args.keep) as scratch, _postgres(args.state, scratch) as postgres:
        for connections in args.connections:
            figures, bad = measure_connections(args, generator, connections, plan, scratch, budget, postgres)
            runs.append(figures)
            failed |= bad
    line: dict[str, Any] = {
        "benchmark": "intake",
        "generator": generator,
        "messages": args.messages,
        "message_bytes": args.size,
        "suppressed_share": args.suppressed_share,
        "send_rate": args.send_rate,
        "repeat": args.repeat,
        "state": args.state,
        "runs": runs,
        "targets": targets(runs),
        "machine": common.machine(),
    }
    if skipped_postfix:
        line["postfix_skipped"] = skipped_postfix
    common.emit(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(common.run_main("intake", main))
