"""The benchmarks' own parts: the private Postfix, intake.py's figures, ses_call.py, profiles.

The benchmarks are not tests, but what they report is only worth something if the
apparatus does what it says: Postfix really relays every message to smtp-sink and
goes away without a trace, the relay's end-to-end figure waits for SES to have
everything, a --relay-site patch really runs in serve and in its worker, the lean
SES prototype makes requests SES (the stand-in) accepts. Small loads, real processes.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common, postfix
from bench.profile_summary import main as profile_summary
from tests.conftest import ROOT

BENCH = ROOT / "bench"
NO_POSTFIX = postfix.unavailable()


def run_bench(script: str, *args: str, timeout: float = 110) -> tuple[int, dict, str]:
    """A benchmark as a subprocess: (exit status, its JSON line, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SES_RELAY_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) <= 1, f"more than one line on stdout: {result.stdout[:500]}"
    return result.returncode, json.loads(lines[0]) if lines else {}, result.stderr


@pytest.mark.skipif(NO_POSTFIX is not None, reason=f"no private Postfix here: {NO_POSTFIX}")
def test_private_postfix_relays_everything_to_smtp_sink_and_leaves_nothing_behind() -> None:
    system_main_cf = Path("/etc/postfix/main.cf")
    before = system_main_cf.stat().st_mtime_ns if system_main_cf.exists() else None
    instance = postfix.start(60)
    try:
        assert instance.root != Path("/etc/postfix")
        with smtplib.SMTP("127.0.0.1", instance.port, timeout=10) as client:
            for n in range(3):
                body = f"From: a@example.org\r\nSubject: {n}\r\n\r\nbody {n}\r\n"
                refused = client.sendmail("a@example.org", [f"{n}x@example.net", f"{n}y@example.net"], body)
                assert refused == {}
        finished = instance.wait_drained(3, common.Budget(30))
        assert finished is not None, instance.log_tail()
        assert instance.delivered() >= 3
        assert instance.queued() == 0
        # master, and the daemons it started for these messages (smtpd, cleanup, qmgr, smtp, ...)
        assert instance.processes() >= 4
        assert instance.pss_mb() > 0
        master_pid, root = instance.master.pid, instance.root
    finally:
        instance.stop()
    assert instance.master.poll() is not None
    assert postfix.live_in_group(master_pid) == []
    assert not root.exists()
    assert (system_main_cf.stat().st_mtime_ns if system_main_cf.exists() else None) == before


@pytest.mark.skipif(NO_POSTFIX is not None, reason=f"no private Postfix here: {NO_POSTFIX}")
def test_private_postfix_refuses_a_malformed_recipient() -> None:
    instance = postfix.start(60)
    try:
        with smtplib.SMTP("127.0.0.1", instance.port, timeout=10) as client:
            client.ehlo("bench.example.org")
            assert client.mail("a@example.org")[0] == 250
            code, _ = client.rcpt("<not an address>")
            assert code >= 500
    finally:
        instance.stop()


def test_intake_line_has_end_to_end_cpu_memory_and_the_comparisons(tmp_path: Path) -> None:
    site = tmp_path / "mark.py"
    site.write_text(
        "import os, sys\n"
        "role = 'worker' if 'worker' in sys.argv else 'serve'\n"
        f"open(os.path.join({str(tmp_path)!r}, 'site-' + role), 'w').close()\n"
    )
    args = ["--messages", "60", "--connections", "2", "--baseline", "--relay-site", str(site)]
    args += ["--max-seconds", "100"]
    if NO_POSTFIX is None:
        args.append("--postfix")
    code, line, err = run_bench("intake.py", *args)
    assert code == 0, err[-2000:]
    run = line["runs"][0]
    assert run["e2e_complete"] is True and run["ses_duplicates"] == 0
    assert 0 < run["e2e_msgs_per_s"] <= run["msgs_per_s"] * 1.5
    assert run["cpu_ms_per_msg"] > 0 and run["cpu_s"]["worker"] > 0 and run["cpu_s"]["serve"] > 0
    assert run["peak_rss_mb_both"] > run["peak_rss_mb"] > 0 and run["pss_mb_both"] > 0
    assert run["bare"]["msgs_per_s"] > 0 and run["ratio_to_bare"] > 0
    assert run["ratios_by_round"]["to_bare"] == [run["ratio_to_bare"]]
    patched = run["relay+mark"]
    assert patched["e2e_complete"] is True and patched["gain_over_relay"] > 0
    assert (tmp_path / "site-serve").exists() and (tmp_path / "site-worker").exists()
    if NO_POSTFIX is None:
        assert run["postfix"]["e2e_complete"] is True
        assert run["postfix"]["sink_messages"] >= 60 and run["postfix"]["queue_files_left"] == 0
        assert run["ratio_to_postfix"] > 0 and run["e2e_ratio_to_postfix"] > 0
        assert run["postfix"]["cpu_ms_per_msg"] > 0
    else:
        assert line["postfix_skipped"] == NO_POSTFIX
    assert set(line["targets"]) == set()  # judged at 10 and 50 connections only


def test_intake_state_postgres_runs_the_same_load_on_a_shared_state_beside_sqlite() -> None:
    args = ["--messages", "60", "--connections", "2", "--state", "postgres", "--repeat", "2"]
    code, line, err = run_bench("intake.py", *args, "--max-seconds", "100", timeout=150)
    assert code == 0, err[-2000:]
    assert line["state"] == "postgres"
    run = line["runs"][0]
    shared = run["postgres"]
    assert shared["e2e_complete"] is True and shared["ses_duplicates"] == 0 and shared["errors"] == 0
    # Its state really was in PostgreSQL: the shipper had brought the submissions there
    # (refusals are counted there too, not in the local file).
    assert 0 < shared["shared_submissions"] <= shared["store"]["submissions"]
    assert shared["store"]["refusals"] == 0 < run["store"]["refusals"]
    # The server's CPU is counted (60 messages may cost it under 5 ms, which rounds to 0.0).
    assert shared["postgres_server_cpu_s"] >= 0
    assert shared["cpu_ms_per_msg_with_server"] > 0
    assert "shared_submissions" not in run  # and the SQLite run's was not
    assert run["ratio_postgres_to_sqlite"] == round(shared["msgs_per_s"] / run["msgs_per_s"], 3)
    assert len(run["ratios_by_round"]["postgres_to_sqlite"]) == 2


BAD_OPTIONS = [
    ["--repeat", "0"],
    ["--relay-site", "/nonexistent/site.py"],
    ["--connections", "0"],
    ["--messages", "0"],
    ["--state", "mysql"],
]


@pytest.mark.parametrize("args", BAD_OPTIONS)
def test_intake_refuses_bad_options(args: list[str]) -> None:
    code, line, err = run_bench("intake.py", *args, timeout=30)
    assert code == 2 and line == {}
    assert "error:" in err


def test_ses_call_prototype_makes_requests_the_stand_in_accepts() -> None:
    code, line, err = run_bench("ses_call.py", "--calls", "40", "--threads", "2", "--max-seconds", "60")
    assert code == 0, err[-2000:]
    for client in ("boto3", "relay_lean", "lean"):
        assert [r["calls"] for r in line["results"][client]] == [40, 40]
        assert all(r["cpu_ms_per_call"] > 0 for r in line["results"][client])
    # one warm-up call and two rounds of 40 for each client, all counted as SendRawEmail
    assert line["standin_calls"] == 3 * (1 + 40 + 40)
    assert set(line["boto3_cpu_over_relay_lean"]) == {"threads_1", "threads_2"}


def test_profile_summary_attributes_samples_to_the_innermost_component(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "serve.txt"
    loop = "run (asyncio/runners.py:160);SMTP._handle_client (aiosmtpd/smtp.py:613)"
    data = f"{loop};IntakeHandler.handle_DATA (relay/intake/handler.py:196)"
    raw.write_text(
        f"{loop};SMTP._getaddr (aiosmtpd/smtp.py:1177);get_angle_addr (email/_header_value_parser.py:1) 30\n"
        f"{data};Logger.info (logging/__init__.py:1479) 20\n"
        f"{data};helper (textwrap.py:1) 10\n"
        "Thread.run (threading.py:971);_commit (relay/store/sqlite.py:259) 40\n"
        "not a stack line\n"
    )
    assert profile_summary([str(raw), "--rate", "100", "--messages", "1000"]) == 0
    out = capsys.readouterr().out
    assert "100 samples = 1.00 s" in out
    assert "30.0 %   0.300 ms/msg  email package (parsing)" in out
    assert "20.0 %   0.200 ms/msg  logging" in out
    assert "10.0 %   0.100 ms/msg  relay intake (handler, DATA)" in out
    assert "40.0 %   0.400 ms/msg  SQLite (relay/store + sqlite3)" in out
    assert "30.0 %   0.300 ms/msg  aiosmtpd address parsing (_getaddr, email parser)" in out


def test_profile_summary_of_an_empty_profile_fails(tmp_path: Path) -> None:
    raw = tmp_path / "empty.txt"
    raw.write_text("")
    assert profile_summary([str(raw)]) == 1
