"""Where the time goes, from py-spy's raw (collapsed) stacks: by component, by function.

`bench/intake.py --profile DIR` leaves one raw file per process (serve, worker),
sampled with `--gil` (only the thread holding the GIL is sampled, so a sample is
interpreter time, not a thread waiting) and `--function` (frames are functions).
This prints, for one file:

- the samples, and the interpreter time they stand for (samples / rate), per
  message with --messages;
- **by component**: each sample goes to the innermost frame that belongs to a known
  component (logging, the email package, SQLite, botocore, aiosmtpd, asyncio, ...),
  so a stdlib helper counts for the component that called it;
- **probes**: the share of samples with a given function anywhere on the stack
  (inclusive), for the functions issue 14 asks about, plus any --grep;
- the top functions by self time (the leaf frame).

    .venv/bin/python bench/profile_summary.py DIR/relay-c50-r0-serve.txt --rate 200 --messages 5000
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# (component, pattern on a frame's "function (file:line)" text), innermost match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("logging", r"\(logging/|\(relay/logsetup\.py|\(relay/logredact\.py"),
    ("email package (parsing)", r"\(email/"),
    ("SQLite (relay/store + sqlite3)", r"\(relay/store/|\(sqlite3/"),
    ("botocore/boto3", r"\(botocore/|\(boto3/|\(s3transfer/"),
    ("urllib3/http.client", r"\(urllib3/|\(http/client\.py"),
    ("prometheus_client", r"\(prometheus_client/"),
    ("DKIM", r"\(dkim/|\(relay/sending/dkim(_sign)?\.py"),
    ("aiosmtpd protocol", r"\(aiosmtpd/"),
    ("relay intake (handler, DATA)", r"\(relay/intake/"),
    ("relay sending (sender, SES client)", r"\(relay/sending/"),
    ("relay other", r"\((relay|cli|feedback)/"),
    ("asyncio event loop and transports", r"\(asyncio/|\(selectors\.py"),
    ("threads and queues", r"\(threading\.py|\(queue\.py|\(concurrent/"),
)
PROBES: tuple[tuple[str, str], ...] = (
    ("aiosmtpd per-command loop (_handle_client)", r"^SMTP\._handle_client \(aiosmtpd/"),
    ("aiosmtpd address parsing (_getaddr, email parser)", r"_getaddr \(aiosmtpd/"),
    ("relay address normalising", r"^normalise \(relay/addresses\.py"),
    ("handle_RCPT", r"handle_RCPT \(relay/intake/"),
    ("handle_DATA", r"handle_DATA \(relay/intake/"),
    ("header parse (relay/headers.py)", r"\(relay/headers\.py"),
    ("store accept", r"\.accept \(relay/store/"),
    ("suppression lookups", r"suppressions_for \(relay/store/"),
    ("logging (any)", r"\(logging/"),
    ("socket writes (transport.write)", r"_SelectorSocketTransport\.write \(asyncio/"),
    ("metrics (prometheus_client)", r"\(prometheus_client/"),
    ("botocore make_api_call", r"_make_api_call \(botocore/"),
    ("botocore SigV4 signing", r"\(botocore/auth\.py"),
    ("botocore request building (serialize, endpoint)", r"\(botocore/(serialize|endpoint|awsrequest)\.py"),
    ("botocore response parsing", r"\(botocore/parsers\.py"),
    ("botocore hooks/events", r"\(botocore/hooks\.py"),
    ("urllib3 + http.client", r"\(urllib3/|\(http/client\.py"),
    ("MIME build / DKIM for SES", r"\(relay/sending/dkim(_sign)?\.py|\(dkim/"),
    ("the lean SES call (relay/sending/ses_lean.py)", r"send_raw \(relay/sending/ses_lean\.py"),
    ("store (any relay/store frame)", r"\(relay/store/"),
)


def parse(path: Path) -> Iterator[tuple[list[str], int]]:
    """(frames root to leaf, count) per line of py-spy's raw format."""
    with path.open(errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                yield stack.split(";"), int(count)


def component_of(frames: list[str], compiled: list[tuple[str, re.Pattern[str]]]) -> str:
    for frame in reversed(frames):
        for name, pattern in compiled:
            if pattern.search(frame):
                return name
    return "other"


def summarise(
    stacks: Iterable[tuple[list[str], int]], grep: list[str], top: int
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    comps = [(name, re.compile(p)) for name, p in COMPONENTS]
    probes = [(name, re.compile(p)) for name, p in PROBES] + [(g, re.compile(re.escape(g))) for g in grep]
    by_component: collections.Counter[str] = collections.Counter()
    by_probe: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in stacks:
        total += count
        by_component[component_of(frames, comps)] += count
        by_leaf[frames[-1]] += count
        for name, pattern in probes:
            if any(pattern.search(frame) for frame in frames):
                by_probe[name] += count
    probe_rows = [(name, by_probe[name]) for name, _ in probes]
    return total, by_component.most_common(), probe_rows, by_leaf.most_common(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="py-spy raw output (bench/intake.py --profile)")
    parser.add_argument("--rate", type=float, default=200.0, help="py-spy's samples per second (200)")
    parser.add_argument("--messages", type=int, default=0, help="messages in the run: adds ms per message")
    parser.add_argument("--grep", action="append", default=[], help="also show this frame text (inclusive)")
    parser.add_argument("--top", type=int, default=20, help="functions by self time (20)")
    args = parser.parse_args(argv)
    total, components, probes, leaves = summarise(parse(args.file), args.grep, args.top)
    if total == 0:
        print(f"{args.file}: no samples", file=sys.stderr)
        return 1

    def row(name: str, count: int) -> str:
        ms = f"  {count / args.rate * 1000.0 / args.messages:6.3f} ms/msg" if args.messages else ""
        return f"  {100.0 * count / total:5.1f} %{ms}  {name}"

    seconds = total / args.rate
    per_msg = f", {seconds * 1000.0 / args.messages:.3f} ms a message" if args.messages else ""
    print(f"{args.file.name}: {total} samples = {seconds:.2f} s with the GIL{per_msg}")
    print("by component (innermost known frame):")
    for name, count in components:
        print(row(name, count))
    print("probes (anywhere on the stack):")
    for name, count in probes:
        if count:
            print(row(name, count))
    print(f"top {args.top} functions by self time:")
    for name, count in leaves:
        print(row(name, count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
