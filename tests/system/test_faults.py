"""Fault tests: the promise holds through crashes, outages, throttling and bad clients.

The promise: a 250 to DATA means the message is durably committed and will be
sent, or its sender told why not. Each test here breaks something real, from the
outside, and checks that promise against what a recording stand-in SES received:

- `serve` killed with SIGKILL in the middle of a load, then restarted;
- SES refusing connections for 30 s;
- SES throttling half the calls, with a send-rate ceiling to hold;
- the feedback consumer killed with SIGKILL mid-stream, then run again;
- the data dir's filesystem running full while mail is accepted;
- clients that stall in DATA or sit idle by the hundred.

Everything is observed from outside the processes: SMTP replies, FakeSes calls,
the SQLite file read with plain sqlite3, the SQS queue through boto3. Nothing
depends on how `serve` arranges its work inside (one process or several).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import SES_RELAY, Relay, child_env, wait_until
from tests.support.fake_ses import Failure, FakeRequest, FakeSes, ReceivedCall
from tests.support.load import Load, Outcome, Stage, by_stage, default_message, load_index, run_load

SES_CONCURRENCY = 8
# Duplicates after a SIGKILL: at most the SES calls in flight at the kill, i.e. one
# chunk per worker (ses.concurrency) today. The margin leaves room for the sender
# moving into its own process(es) without this test having to be retuned.
DUPLICATE_BOUND = 50


def ses_toml(endpoint: str, *, rate: float = 10_000.0, extra: str = "", sections: str = "") -> str:
    return (
        f'[ses]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\nmax_send_rate = {rate}\n'
        f"concurrency = {SES_CONCURRENCY}\n{extra}\n{sections}"
    )


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with FakeSes() as fake:
        yield fake


def db_rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the relay's store with plain sqlite3 (what is on disk, whatever the relay believes)."""
    db = sqlite3.connect(data_dir / "relay.db", timeout=10)
    try:
        return list(db.execute(sql, params).fetchall())
    finally:
        db.close()


def db_count(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    return int(db_rows(data_dir, sql, params)[0][0])


def tag(call: ReceivedCall, name: str) -> str | None:
    return dict(call.tags).get(name)


def request_tag(request: FakeRequest, name: str) -> str | None:
    """A tag of a raw SendRawEmail request, as a hook sees it (query-protocol members)."""
    for key, value in request.params.items():
        if key.startswith("Tags.member.") and key.endswith(".Name") and value == name:
            return request.params.get(key[: -len("Name")] + "Value")
    return None


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- crash under load


def test_sigkill_under_load_loses_no_accepted_message(relay_factory, fake_ses: FakeSes) -> None:
    config = ses_toml(fake_ses.url)
    relay = relay_factory(config)
    load = Load("127.0.0.1", relay.port, n=2000, connections=10).start()
    wait_until(lambda: load.finished >= 800, timeout=60, interval=0.01, what="800 replies")

    family = descendants(relay.proc.pid)
    relay.proc.kill()  # SIGKILL: no shutdown code runs
    relay.proc.wait(timeout=10)
    killed_at = time.monotonic()
    outcomes = load.join(60)
    stages = by_stage(outcomes)
    accepted = {o.sid: o for o in stages[Stage.ACCEPTED]}
    assert len(accepted) >= 700, "the kill came too early to test anything"
    assert None not in accepted, "a 250 without 'queued as <id>'"
    # A sender (or anything else) in a child process must die with serve, or the
    # restarted relay would race it for the same spool rows.
    try:
        wait_until(lambda: not any(alive(p) for p in family), timeout=10, what="serve's children to exit")
    finally:
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    calls_before_restart = len(fake_ses.calls)

    again = relay_factory(config)  # same name: same data dir
    wait_until(
        lambda: db_count(again.data_dir, "SELECT count(*) FROM spool") == 0,
        timeout=60,
        what="the spool to drain after the restart",
    )
    # Nothing more may arrive once the spool is empty (no orphaned sender still busy).
    settled = len(fake_ses.calls)
    time.sleep(2)
    calls = fake_ses.calls
    assert len(calls) == settled, "SES calls kept arriving after the spool was empty"

    per_sid = Counter(tag(c, "submission-id") for c in calls)
    missing = [sid for sid in accepted if per_sid[sid] == 0]
    assert not missing, f"{len(missing)} message(s) got 250 but never reached SES, e.g. {missing[:3]}"
    duplicates = sum(n - 1 for n in per_sid.values() if n > 1)
    assert duplicates <= DUPLICATE_BOUND, f"{duplicates} duplicate sends after one SIGKILL"

    sent_indexes = {load_index(c.raw) for c in calls}
    never = {o.index for o in stages[Stage.REJECTED] + stages[Stage.NOT_SENT]}
    assert not sent_indexes & never, "a message the client was refused (or never sent) reached SES"

    # Whatever was committed, 250 seen or not (in doubt), is sent and nothing failed.
    assert db_count(again.data_dir, "SELECT count(*) FROM recipients WHERE status <> 'sent'") == 0
    committed = {row[0] for row in db_rows(again.data_dir, "SELECT id FROM submissions")}
    assert set(accepted) <= committed
    assert committed <= set(per_sid)
    print(
        f"\ncrash: {len(accepted)} accepted, {len(stages[Stage.REJECTED])} refused, "
        f"{len(stages[Stage.IN_DOUBT])} in doubt, "
        f"{len(stages[Stage.NOT_SENT])} not sent; {len(committed)} committed; "
        f"{calls_before_restart} SES calls before the restart, {len(calls)} in all; "
        f"{duplicates} duplicate(s); drained {time.monotonic() - killed_at:.1f}s after the kill"
    )


# --------------------------------------------------------------------------- SES outage


def test_ses_refusing_connections_for_30s_loses_nothing(relay_factory, fake_ses: FakeSes) -> None:
    from relay.config import SesConfig

    if "retry_cap" not in SesConfig.model_fields:
        pytest.skip(
            "needs [ses] retry_cap: with the fixed 300 s backoff cap, 200 messages deferred through a "
            "30 s outage take ~2 min (median, worst message) to drain after SES is back"
        )
    fake_ses.stop_listening()
    relay = relay_factory(ses_toml(fake_ses.url, extra='retry_cap = "2s"\n'))
    outage_ends = time.monotonic() + 30
    outcomes = run_load("127.0.0.1", relay.port, n=200, connections=5)
    refused = [o.reply for o in outcomes if o.stage is not Stage.ACCEPTED]
    assert not refused, refused[:3]
    wait_until(lambda: "will retry" in relay.log(), timeout=20, what="failed SES attempts")
    assert fake_ses.calls == []
    assert db_count(relay.data_dir, "SELECT count(*) FROM spool") == 200

    time.sleep(max(0.0, outage_ends - time.monotonic()))
    fake_ses.start_listening()
    back = time.monotonic()
    wait_until(
        lambda: db_count(relay.data_dir, "SELECT count(*) FROM spool") == 0,
        timeout=45,
        what="the spool to drain once SES is back",
    )
    drained = time.monotonic() - back
    time.sleep(1)
    per_sid = Counter(tag(c, "submission-id") for c in fake_ses.calls)
    assert set(per_sid) == {o.sid for o in outcomes}, "lost (or foreign) messages"
    assert max(per_sid.values()) == 1, "a message was sent twice"
    assert db_count(relay.data_dir, "SELECT count(*) FROM recipients WHERE status <> 'sent'") == 0
    print(f"\noutage: 200 accepted during the outage, drained {drained:.1f}s after SES came back")


# --------------------------------------------------------------------------- throttling


class HalfThrottled:
    """A FakeSes hook: every other SendRawEmail call is answered Throttling.

    Strictly alternating over all calls, except that one message is never throttled
    more than MAX_IN_A_ROW times running: with full-jitter backoff doubling per
    attempt, an unlucky message throttled eight times in a row would wait minutes,
    and that tail measures the backoff, not whether throttling loses mail. Every
    call is timestamped, throttled or not, because the ceiling is on all calls.
    """

    MAX_IN_A_ROW = 3

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamps: list[float] = []
        self.throttled = 0
        self._calls = 0
        self._owed = 0  # throttles due (one per two calls) and not yet handed out
        self._in_a_row: Counter[str] = Counter()

    def __call__(self, request: FakeRequest) -> Failure | None:
        if request.action != "SendRawEmail":
            return None
        sid = request_tag(request, "submission-id") or "?"
        with self.lock:
            self.stamps.append(time.monotonic())
            self._calls += 1
            self._owed += self._calls % 2
            if self._owed == 0 or self._in_a_row[sid] >= self.MAX_IN_A_ROW:
                self._in_a_row[sid] = 0
                return None
            self._owed -= 1
            self._in_a_row[sid] += 1
            self.throttled += 1
        return Failure("Throttling", "Maximum sending rate exceeded.", 400)


def max_in_window(stamps: list[float], width: float) -> int:
    """The most calls inside any window of `width` seconds (windows start at a call)."""
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + width:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.solo  # times a latency or a rate: runs alone (see Makefile)
def test_throttling_half_the_calls_sends_everything_within_the_rate_ceiling(
    relay_factory, fake_ses: FakeSes
) -> None:
    rate = 20.0
    hook = HalfThrottled()
    fake_ses.set_hook(hook)
    relay = relay_factory(ses_toml(fake_ses.url, rate=rate))
    outcomes = run_load("127.0.0.1", relay.port, n=200, connections=5)
    assert all(o.stage is Stage.ACCEPTED for o in outcomes)
    wait_until(
        lambda: db_count(relay.data_dir, "SELECT count(*) FROM spool") == 0,
        timeout=90,
        what="every message sent through the throttling",
    )
    per_sid = Counter(tag(c, "submission-id") for c in fake_ses.calls)
    assert set(per_sid) == {o.sid for o in outcomes}
    assert max(per_sid.values()) == 1
    assert db_count(relay.data_dir, "SELECT count(*) FROM recipients WHERE status <> 'sent'") == 0
    assert hook.throttled >= 150, "the stand-in did not throttle as much as the test means"

    # The token bucket lets a full bucket (one second's worth) through at once and
    # then `rate` a second: any window of w seconds holds at most rate*w + burst
    # calls. SLACK absorbs scheduling jitter between the limiter and the server.
    burst, slack = rate, 3
    with hook.lock:
        stamps = list(hook.stamps)
    for width in (1.0, 2.0, 5.0, stamps[-1] - stamps[0] + 0.001):
        seen = max_in_window(stamps, width)
        assert seen <= rate * width + burst + slack, f"{seen} calls within {width:.1f}s at {rate}/s"
    # Past the first second the bucket has been emptied: one second holds ~rate calls.
    steady = [s for s in stamps if s >= stamps[0] + 1.0]
    peak = max_in_window(steady, 1.0)
    span = stamps[-1] - stamps[0]
    print(
        f"\nthrottling: {len(stamps)} calls ({hook.throttled} throttled) in {span:.1f}s; "
        f"{len(stamps) / span:.1f} calls/s overall; busiest 1-s window after the first: {peak}"
    )


# --------------------------------------------------------------------------- consumer crash

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"


async def _seed_sent(data_dir: Path, n: int) -> list[tuple[str, str, str]]:
    """n one-recipient submissions recorded as sent; [(submission id, recipient, SES id)]."""
    from relay.sandbox.stand_in import ses_id
    from relay.store import NewRecipient, NewSubmission, Store
    from relay.timeutil import new_id, utcnow

    store = await Store.open(data_dir / "relay.db")
    out = []
    try:
        for i in range(n):
            now = utcnow()
            sid, rcpt, mid = new_id(now), f"u{i}@example.org", ses_id(now)
            sub = NewSubmission(
                id=sid, mail_from="app@example.com", klass="transactional", class_source="default",
                configuration_set="tx", tags=(), header_from="App <app@example.com>", subject=f"seed {i}",
                message_id=f"<seed-{i}@example.com>", headers="", size=100, client_ip="127.0.0.1",
                auth_user=None, created_at=now, recipients=(NewRecipient(rcpt, "queued"),),
            )  # fmt: skip
            await store.accept(sub, default_message(i), time.time())
            await store.record_outcome(sid, [rcpt], "sent", now=now, ses_message_id=mid)
            await store.finish(sid)
            out.append((sid, rcpt, mid))
    finally:
        await store.close()
    return out


def _event_bodies(seeded: list[tuple[str, str, str]], foreign: int) -> list[str]:
    """SNS-envelope bodies, one SES event each, as the relay's SES would publish them."""
    from relay.sandbox.stand_in import (
        Bounce,
        bounce_event,
        build_mail,
        complaint_event,
        delivery_event,
        ses_id,
    )
    from relay.sending.ses_api import SendRequest
    from relay.timeutil import utcnow

    def mail(mid: str, rcpt: str, sid: str | None) -> dict[str, Any]:
        tags = (("message-class", "transactional"), ("submission-id", sid)) if sid else ()
        request = SendRequest(raw=default_message(0), source="app@example.com", destinations=(rcpt,),
                              configuration_set="tx", tags=tags)  # fmt: skip
        return build_mail(request, message_id=mid, sent_at=utcnow(), account_id="123456789012",
                          region="us-east-1")  # fmt: skip

    hard = Bounce("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown")
    soft = Bounce("Transient", "General", "4.4.7", "smtp; 421 4.4.7 message expired")
    events: list[dict[str, Any]] = []
    half = len(seeded) // 2
    for i, (sid, rcpt, mid) in enumerate(seeded):
        m, now = mail(mid, rcpt, sid), utcnow()
        if i < half:
            events.append(delivery_event(m, rcpt, now, 1200))
            events.append(complaint_event(m, rcpt, "abuse", now))
        else:
            events.append(bounce_event(m, rcpt, hard, now))
    for j in range(foreign):
        now = utcnow()
        rcpt = f"f{j}@example.net"
        events.append(bounce_event(mail(ses_id(now), rcpt, None), rcpt, soft, now))
    from relay.sandbox.stand_in import sns_envelope

    return [sns_envelope(e, topic_arn=TOPIC_ARN, at=utcnow()) for e in events]


def _queue_depth(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs.get(n, 0)) for n in names)


def test_sigkill_of_the_consumer_loses_no_event_and_applies_none_twice(
    moto_server: str, tmp_path: Path
) -> None:
    from feedback.bodies import parse_body

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "consumer.toml"
    config.write_text('[ses]\nregion = "us-east-1"\n')  # SQS: AWS_ENDPOINT_URL_SQS
    seeded = asyncio.run(_seed_sent(data_dir, 100))
    bodies = _event_bodies(seeded, foreign=150)
    expected = {e.dedupe_key for body in bodies for e in parse_body(body).events}
    assert len(bodies) == len(expected) == 300

    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    url = sqs.create_queue(
        QueueName=f"fault-consumer-{os.getpid()}-{time.monotonic_ns()}",
        Attributes={"VisibilityTimeout": "2"},  # what the killed consumer held comes back soon
    )["QueueUrl"]
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(k), "MessageBody": b} for k, b in enumerate(bodies[start : start + 10])]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    assert _queue_depth(sqs, url) == 300

    def events_logged() -> int:
        return db_count(data_dir, "SELECT count(*) FROM events")

    log_file = (tmp_path / "consumer.log").open("w")
    cmd = [SES_RELAY, "feedback", "consume", "--queue-url", url, "--data-dir", str(data_dir)]
    proc = subprocess.Popen([*cmd, "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT,
                            env=child_env({"AWS_ENDPOINT_URL_SQS": moto_server}))  # fmt: skip
    try:
        wait_until(lambda: events_logged() >= 60, timeout=60, interval=0.005, what="some events applied")
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
    at_kill = events_logged()
    assert at_kill < 300, "the consumer finished before it could be killed mid-stream"

    # Restart (as often as it takes for the killed consumer's invisible batch to come back).
    runs = []
    for _ in range(4):
        time.sleep(2.5)  # > VisibilityTimeout
        result = subprocess.run([*cmd, "--config", str(config), "--once"], capture_output=True, text=True,
                                env=child_env({"AWS_ENDPOINT_URL_SQS": moto_server}), timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs.append(result.stdout.strip())
        if _queue_depth(sqs, url) == 0:
            break
    assert _queue_depth(sqs, url) == 0, runs
    assert not sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages")

    logged = [row[0] for row in db_rows(data_dir, "SELECT dedupe_key FROM events")]
    assert len(logged) == 300
    assert set(logged) == expected
    assert db_count(data_dir, "SELECT count(*) FROM dead_letters") == 0
    # What applying an event twice would leave behind (these tables have no unique key to hide it):
    assert db_count(data_dir, "SELECT count(*) FROM transient_bounces") == 150
    assert db_count(data_dir, "SELECT count(*) FROM notices") == 50
    assert db_count(data_dir, "SELECT count(*) FROM suppressions") == 250
    assert db_count(data_dir, "SELECT count(*) FROM suppressions WHERE class = '*'") == 200
    statuses = Counter(row[0] for row in db_rows(data_dir, "SELECT status FROM recipients"))
    assert statuses == {"complained": 50, "bounced": 50}, statuses
    print(f"\nconsumer: killed with {at_kill}/300 events applied; restart(s): {runs}")


# --------------------------------------------------------------------------- store trouble


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs of our own, so the data dir can really run out of space.

    Only root may mount; elsewhere the test is skipped (an unprivileged process has
    no honest way to make SQLite's already-open file fail its writes).
    """
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the data dir: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(path: Path) -> int:
    """Write `path` until the filesystem has no byte left; return how much it holds."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with path.open("wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            piece = chunk[:size]
            for _ in range(64 << 20):  # bounded: far more than the filesystem holds
                try:
                    written += fh.write(piece) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def big_message(subject: str) -> bytes:
    """~64 KB, so each commit needs new pages in the WAL rather than reusing old ones."""
    body = ("x" * 76 + "\r\n") * 840
    return (
        f"From: App <app@example.com>\r\nTo: s@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\n\r\n{body}"
    ).encode()


def send_one(relay: Relay, subject: str) -> Outcome:
    outcomes = run_load(
        "127.0.0.1", relay.port, n=1, connections=1, make_message=lambda _i: big_message(subject)
    )
    return outcomes[0]


def consistent(data_dir: Path) -> None:
    """Nothing half-written: the file is sound and every submission is whole."""
    assert db_rows(data_dir, "PRAGMA integrity_check") == [("ok",)]
    orphans = {
        "recipients without a submission": "SELECT count(*) FROM recipients r "
        "WHERE NOT EXISTS (SELECT 1 FROM submissions s WHERE s.id = r.submission_id)",
        "spool rows without a submission": "SELECT count(*) FROM spool p "
        "WHERE NOT EXISTS (SELECT 1 FROM submissions s WHERE s.id = p.submission_id)",
        "submissions without recipients": "SELECT count(*) FROM submissions s "
        "WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.submission_id = s.id)",
        "queued recipients without spooled bytes": "SELECT count(*) FROM recipients r "
        "WHERE r.status = 'queued' "
        "AND NOT EXISTS (SELECT 1 FROM spool p WHERE p.submission_id = r.submission_id)",
    }
    for what, sql in orphans.items():
        assert db_count(data_dir, sql) == 0, what


def test_full_data_dir_gets_451_writes_nothing_half_and_recovers(
    relay_factory, fake_ses: FakeSes, small_fs: Path
) -> None:
    relay = relay_factory(ses_toml(fake_ses.url), name="small-fs/data")
    for i in range(3):
        assert send_one(relay, f"before {i}").stage is Stage.ACCEPTED
    wait_until(lambda: len(fake_ses.calls) == 3, timeout=30, what="the first messages sent")

    # The disk fills in the middle of a load and frees up again while it goes on.
    load = Load("127.0.0.1", relay.port, n=80, connections=4,
                make_message=lambda i: big_message(f"load {i}")).start()  # fmt: skip
    filler = small_fs / "filler"
    try:
        wait_until(lambda: load.finished >= 10, timeout=30, interval=0.01, what="some messages accepted")
        filled = fill(filler)
        wait_until(lambda: load.count(Stage.REJECTED) >= 8, timeout=30, interval=0.01, what="451s")
        assert relay.proc.poll() is None, "serve died when its disk filled"
    finally:
        filler.unlink(missing_ok=True)
    stages = by_stage(load.join(60))
    assert stages[Stage.IN_DOUBT] == stages[Stage.NOT_SENT] == []
    for outcome in stages[Stage.REJECTED]:
        assert outcome.code == 451 and outcome.reply.startswith("4.3.0"), outcome
        assert "store unavailable" in outcome.reply, outcome
    assert "database or disk is full" in relay.log()

    consistent(relay.data_dir)
    subjects = {row[0] for row in db_rows(relay.data_dir, "SELECT subject FROM submissions")}
    accepted = {f"load {o.index}" for o in stages[Stage.ACCEPTED]}
    refused = {f"load {o.index}" for o in stages[Stage.REJECTED]}
    assert subjects == {f"before {i}" for i in range(3)} | accepted, "a refused message left rows behind"

    # Space is back: the next message is accepted, and everything accepted reaches SES.
    after = send_one(relay, "after")
    assert after.stage is Stage.ACCEPTED, after
    wanted = {o.sid for o in stages[Stage.ACCEPTED]} | {after.sid}
    wait_until(lambda: wanted <= {tag(c, "submission-id") for c in fake_ses.calls}, timeout=30,
               what="every accepted message sent")  # fmt: skip
    sent_subjects = {re.search(rb"Subject: ([^\r]*)", c.raw).group(1).decode() for c in fake_ses.calls}
    assert not sent_subjects & refused, "a message refused with 451 was sent"
    consistent(relay.data_dir)
    time.sleep(1)
    # Sent while the disk was full but not recorded: still spooled, leased, to be sent again later.
    unrecorded = db_count(relay.data_dir, "SELECT count(*) FROM spool")
    print(
        f"\nstore: disk filled after {filled >> 10} KB more; {len(accepted)} accepted, "
        f"{len(refused)} refused with 451 4.3.0 while full; recovered; "
        f"{unrecorded} sent but unrecorded (spooled for a resend)"
    )


# --------------------------------------------------------------------------- slow and hostile clients

DATA_TIMEOUT = 4
COMMAND_TIMEOUT = 10


def limits_toml(endpoint: str) -> str:
    return ses_toml(
        endpoint,
        sections=(
            f'[limits]\ndata_timeout = "{DATA_TIMEOUT}s"\ncommand_timeout = "{COMMAND_TIMEOUT}s"\n'
            "connections_per_ip = 300\n"
        ),
    )


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    got = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except OSError:
            break
        if not chunk:
            return got + b"<closed>"
        got += chunk
    return got


def dialogue(sock: socket.socket, line: str) -> bytes:
    sock.sendall(line.encode() + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n") or reply.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


class StalledClient:
    """Gets to DATA, sends half a message, then stalls or trickles a line every half second."""

    def __init__(self, port: int, name: str, *, trickle: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.recv(4096)  # greeting
        assert dialogue(self.sock, "EHLO stalled.example.com").startswith(b"250")
        assert dialogue(self.sock, "MAIL FROM:<app@example.com>").startswith(b"250")
        assert dialogue(self.sock, f"RCPT TO:<{name}@example.org>").startswith(b"250")
        assert dialogue(self.sock, "DATA").startswith(b"354")
        self.sock.sendall(f"From: app@example.com\r\nSubject: {name}\r\n\r\nfirst half\r\n".encode())
        self.started = time.monotonic()
        self.trickle = trickle
        self.reply = b""
        self.ended = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = self.started + DATA_TIMEOUT + 30
        while time.monotonic() < deadline:
            if self.trickle:
                try:
                    self.sock.sendall(b"still coming\r\n")
                except OSError:
                    pass
            self.sock.settimeout(0.5)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            self.reply += chunk
        self.ended = time.monotonic()
        self.sock.close()


def test_stalled_and_idle_clients_neither_slow_others_nor_stay_forever(
    relay_factory, fake_ses: FakeSes
) -> None:
    relay = relay_factory(limits_toml(fake_ses.url))
    baseline = Load("127.0.0.1", relay.port, n=200, connections=5).start()
    assert all(o.stage is Stage.ACCEPTED for o in baseline.join(60))
    calm = baseline.seconds

    idle: list[socket.socket] = []
    stalled: list[StalledClient] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=20)
            idle.append(sock)
        opened = time.monotonic()
        stalled = [StalledClient(relay.port, "stalled", trickle=False),
                   StalledClient(relay.port, "trickled", trickle=True)]  # fmt: skip
        busy = Load("127.0.0.1", relay.port, n=200, connections=5,
                    make_message=lambda i: default_message(1000 + i)).start()  # fmt: skip
        outcomes = busy.join(60)
        assert all(o.stage is Stage.ACCEPTED for o in outcomes), [o.reply for o in outcomes][:3]
        hostile = busy.seconds
        assert time.monotonic() - opened < COMMAND_TIMEOUT, "idle connections timed out before the load ended"
        # "Not hurt": generous, for a loaded 2-core machine; a blocked intake would take far longer.
        slow = f"200 messages took {hostile:.1f}s beside hostile clients, {calm:.1f}s alone"
        assert hostile <= 3 * calm + 5, slow

        for client in stalled:
            client.thread.join(DATA_TIMEOUT + 35)
            assert b"421 4.4.2 Timeout: DATA took too long" in client.reply, client.reply
            assert client.ended - client.started < DATA_TIMEOUT + 20
        deadline = opened + COMMAND_TIMEOUT + 30
        replies = [read_until_closed(sock, deadline) for sock in idle]
        timed_out = sum(b"421 4.4.2 Timeout" in r and r.endswith(b"<closed>") for r in replies)
        assert timed_out == 200, [r for r in replies if b"421 4.4.2" not in r][:3]
    finally:
        for sock in idle:
            sock.close()
        for client in stalled:
            client.sock.close()

    subjects = {row[0] for row in db_rows(relay.data_dir, "SELECT subject FROM submissions")}
    assert not {"stalled", "trickled"} & subjects, "a timed-out DATA was stored"
    assert db_count(relay.data_dir, "SELECT count(*) FROM submissions") == 400
    after = run_load(
        "127.0.0.1", relay.port, n=1, connections=1, make_message=lambda i: default_message(5000)
    )
    assert after[0].stage is Stage.ACCEPTED
    print(
        f"\nclients: 200 messages in {calm:.1f}s alone, {hostile:.1f}s beside 200 idle connections "
        "and 2 stalled DATA transfers; all of those timed out by the server"
    )
