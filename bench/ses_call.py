"""Benchmark: CPU of one SendRawEmail call: boto3 against the worker's lean signed request.

The worker's biggest cost per message is the SES call. This measures it alone,
in this process, against the lean SES stand-in of bench/common.py (its own
process, answering at once):

- `boto3`: the boto3 client (relay.sending.ses_client.BotoSes, API v1), as the
  worker called it before `relay_lean`, and still calls it for SESv2;
- `relay_lean`: the worker's own client for API v1 (relay.sending.ses_lean.LeanSes:
  the body by hand, botocore's SigV4Auth, a pool of keep-alive http.client
  connections, errors classified as boto3's);
- `lean`: the prototype LeanSes was measured with first, kept for comparison: one
  persistent connection per thread, no error classification.

Each runs `--calls` calls of a 2 KB message with 2 destinations and 3 tags, on
1 thread and on `--threads` threads (as the worker's to_thread pool does). Figures:
calls/s and CPU milliseconds per call (this process's user + system time). The
stand-in's CPU is not counted.

    .venv/bin/python bench/ses_call.py --calls 2000 --threads 8
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import re
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

_MESSAGE_ID = re.compile(rb"<MessageId>([^<]+)</MessageId>")


class LeanSes:
    """SendRawEmail as one signed POST over a persistent connection per thread (a prototype)."""

    def __init__(self, endpoint: str, region: str = "us-east-1") -> None:
        import botocore.session
        from botocore.auth import SigV4Auth

        parsed = urllib.parse.urlsplit(endpoint)
        self.url = endpoint.rstrip("/") + "/"
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        credentials = botocore.session.get_session().get_credentials()
        self.signer = SigV4Auth(credentials, "ses", region)
        self.local = threading.local()
        self.opened: list[http.client.HTTPConnection] = []

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.local.conn = conn
            self.opened.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()

    def send_raw(self, request: Any) -> str:
        from botocore.awsrequest import AWSRequest

        fields = [
            ("Action", "SendRawEmail"),
            ("Version", "2010-12-01"),
            ("Source", request.source),
            ("RawMessage.Data", base64.b64encode(request.raw).decode()),
        ]
        fields += [(f"Destinations.member.{i}", d) for i, d in enumerate(request.destinations, 1)]
        for i, (name, value) in enumerate(request.tags, 1):
            fields += [(f"Tags.member.{i}.Name", name), (f"Tags.member.{i}.Value", value)]
        if request.configuration_set:
            fields.append(("ConfigurationSetName", request.configuration_set))
        body = urllib.parse.urlencode(fields).encode()
        aws = AWSRequest(
            method="POST", url=self.url, data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )  # fmt: skip
        self.signer.add_auth(aws)
        conn = self._conn()
        conn.request("POST", "/", body=body, headers=dict(aws.headers.items()))
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"SES stand-in answered {response.status}")
        match = _MESSAGE_ID.search(payload)
        if match is None:
            raise RuntimeError("no MessageId in the answer")
        return match.group(1).decode()


def run(client: Any, request: Any, calls: int, threads: int, max_seconds: float) -> dict[str, Any]:
    """`calls` calls over `threads` threads; calls/s and this process's CPU per call."""
    deadline = time.monotonic() + max_seconds
    done = [0]
    lock = threading.Lock()

    def loop(n: int) -> None:
        for _ in range(n):
            if time.monotonic() > deadline:
                return
            client.send_raw(request)
            with lock:
                done[0] += 1

    share = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(loop, n) for n in share]:
            future.result()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {
        "threads": threads,
        "calls": done[0],
        "calls_per_s": round(done[0] / wall, 1) if wall else None,
        "cpu_ms_per_call": round(cpu * 1000.0 / done[0], 3) if done[0] else None,
        "timed_out": done[0] < calls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client and thread count (2000)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the second round (8)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound on each round (120)")
    args = parser.parse_args(argv)
    if args.calls < 1 or not 1 <= args.threads <= 64 or args.max_seconds <= 0:
        parser.error("--calls >= 1, --threads 1..64, --max-seconds > 0")
    common.check_quiet()
    import os

    os.environ.update(common.FAKE_AWS_ENV)
    from relay.sending.ses_api import SendRequest
    from relay.sending.ses_client import BotoSes
    from relay.sending.ses_lean import LeanSes as RelayLeanSes

    request = SendRequest(
        raw=common.message_bytes(0, ["a@example.net", "b@example.net"]),
        source=common.SENDER,
        destinations=("a@example.net", "b@example.net"),
        tags=(("message-class", "transactional"), ("submission-id", "x" * 26), ("app", "bench")),
    )
    ses = common.start_ses_standin(max_seconds=args.max_seconds * 4 + 60)
    results: dict[str, Any] = {}
    failed = False
    try:
        boto = BotoSes(region="us-east-1", endpoint_url=ses.url, api="v1", concurrency=args.threads)
        relay_lean = RelayLeanSes(region="us-east-1", endpoint_url=ses.url, concurrency=args.threads)
        clients = {"boto3": boto, "relay_lean": relay_lean, "lean": LeanSes(ses.url)}
        for name, client in clients.items():
            client.send_raw(request)  # warm: connection, botocore's loaders
            results[name] = [
                run(client, request, args.calls, threads, args.max_seconds) for threads in (1, args.threads)
            ]
            common.log(f"{name}: {results[name]}")
            failed |= any(r["timed_out"] for r in results[name])
        stats = ses.stats()
        for client in clients.values():
            client.close()
    finally:
        ses.stop()

    def gains(other: str) -> dict[str, float]:
        return {
            f"threads_{r['threads']}": round(r["cpu_ms_per_call"] / lean["cpu_ms_per_call"], 2)
            for r, lean in zip(results["boto3"], results[other], strict=True)
            if r["cpu_ms_per_call"] and lean["cpu_ms_per_call"]
        }

    common.emit(
        {
            "benchmark": "ses_call",
            "calls": args.calls,
            "results": results,
            "boto3_cpu_over_relay_lean": gains("relay_lean"),
            "boto3_cpu_over_lean": gains("lean"),
            "standin_calls": stats["calls"],
            "machine": common.machine(),
        }
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(common.run_main("ses_call", main))
