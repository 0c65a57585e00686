"""stats and the reputation guard, from replayed SES events through the real CLI and serve."""

from __future__ import annotations

import getpass
import json
import mailbox
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from relay.sandbox.stand_in import (
    Bounce,
    bounce_event,
    build_mail,
    complaint_event,
    delivery_event,
    send_event,
)
from relay.sending.ses_api import SendRequest
from relay.timeutil import utcnow
from tests.conftest import SES_RELAY, child_env, cli_json, free_port, run_cli, wait_until
from tests.support.smtp import message, send

PERMANENT = Bounce("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown")
TRANSIENT = Bounce("Transient", "MailboxFull", "4.2.2", "smtp; 452 4.2.2 mailbox full")


def events_file(
    path: Path,
    klass: str,
    *,
    sent: int,
    permanent: int,
    transient: int = 0,
    complaints: int = 0,
    delivered: int = 0,
) -> Path:
    """SES events for `sent` messages of another sender (not sent by this relay), tagged with a class."""
    now = utcnow() - timedelta(minutes=5)
    lines = []
    for i in range(sent):
        rcpt = f"{klass}-{i}@example.net"
        raw = f"From: app@example.com\r\nTo: {rcpt}\r\nSubject: s{i}\r\n\r\nbody\r\n".encode()
        request = SendRequest(
            raw=raw, source="app@example.com", destinations=(rcpt,), tags=(("message-class", klass),)
        )
        mail = build_mail(
            request, message_id=f"{klass}-msg-{i}", sent_at=now, account_id="1", region="us-east-1"
        )
        lines.append(send_event(mail))
        at = now + timedelta(seconds=i)
        if i < permanent:
            lines.append(bounce_event(mail, rcpt, PERMANENT, at))
        elif i < permanent + transient:
            lines.append(bounce_event(mail, rcpt, TRANSIENT, at))
        elif i < permanent + transient + complaints:
            lines.append(delivery_event(mail, rcpt, at, 100))
            lines.append(complaint_event(mail, rcpt, "abuse", at))
        elif i < permanent + transient + complaints + delivered:
            lines.append(delivery_event(mail, rcpt, at, 100))
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return path


def test_stats_json_gives_exact_counts_and_rates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bulk = events_file(
        tmp_path / "bulk.jsonl", "bulk", sent=20, permanent=2, transient=1, complaints=1, delivered=10
    )
    tx = events_file(tmp_path / "tx.jsonl", "transactional", sent=10, permanent=0, delivered=10)
    run_cli("feedback", "replay", str(bulk), str(tx), data_dir=data, check=True)

    stats = cli_json("stats", "--since", "24h", data_dir=data)
    assert stats["since"] == "24h"
    b = stats["classes"]["bulk"]
    assert {
        k: b[k]
        for k in (
            "sent",
            "delivered",
            "bounced",
            "bounced_permanent",
            "bounced_transient",
            "complained",
            "rejected",
        )
    } == {
        "sent": 20,
        "delivered": 11,
        "bounced": 3,
        "bounced_permanent": 2,
        "bounced_transient": 1,
        "complained": 1,
        "rejected": 0,
    }
    assert b["bounce_rate"] == pytest.approx(0.1)
    assert b["complaint_rate"] == pytest.approx(0.05)
    t = stats["classes"]["transactional"]
    assert (t["sent"], t["delivered"], t["bounce_rate"]) == (10, 10, 0.0)
    o = stats["overall"]
    assert (o["sent"], o["bounced_permanent"], o["complained"]) == (30, 2, 1)
    assert o["bounce_rate"] == pytest.approx(2 / 30)

    human = run_cli("stats", data_dir=data, check=True).stdout
    assert "bulk" in human and "10.00%" in human


def test_guard_pauses_a_class_alerts_and_resumes_by_cli(relay_factory, tmp_path: Path) -> None:
    config = (
        '[guard]\nmin_volume = 10\nmin_bounces = 5\nbounce_rate = 0.2\ncheck_every = "1s"\n'
        'alert_to = "admin@example.com"\n'  # one string for a list-valued key
    )
    relay = relay_factory(config, sandbox=True)
    events = events_file(tmp_path / "bad.jsonl", "bulk", sent=10, permanent=5)
    relay.cli("feedback", "replay", str(events), check=True)

    status = wait_until(
        lambda: next(
            (c for c in relay.json("class", "status") if c["class"] == "bulk" and c["paused"]), None
        ),
        what="the guard to pause bulk",
    )
    assert "bounce rate" in status["reason"] and status["changed_by"] == "guard"

    bulk_mail = message("bulk news", "X-Message-Class: bulk\r\n")
    # The worker pauses the class in the store; the intake sees it within its refresh second.
    code, reply = wait_until(
        lambda: (r := send(relay, ["reader@example.org"], bulk_mail))[0] == 451 and r,
        what="the intake to refuse bulk mail",
    )
    assert reply[:6] == b"4.7.1 " and b"paused by the reputation guard (bounce rate" in reply
    code, _ = send(relay, ["buyer@example.org"], message("receipt"))
    assert code == 250

    alerts = wait_until(
        lambda: (p := relay.data_dir / "sandbox" / "admin@example.com").exists() and list(mailbox.Maildir(p)),
        what="the alert to the admin",
    )
    assert "bulk" in alerts[0]["Subject"]

    relay.cli("class", "resume", "bulk", check=True)
    wait_until(lambda: send(relay, ["reader@example.org"], bulk_mail)[0] == 250, what="bulk accepted again")


def test_an_admin_pause_reads_paused_by_the_cli_user(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    actor = f"cli:{getpass.getuser()}"
    paused = relay.cli("class", "pause", "bulk", "--reason", "list cleanup\nunder way", check=True)
    assert paused.stdout.strip() == f"class bulk paused by {actor}"

    status = relay.cli("class", "status", check=True).stdout
    [bulk] = [line for line in status.splitlines() if line.startswith("bulk ")]
    assert f"paused by {actor} since " in bulk and bulk.endswith(": list cleanup")
    assert "reputation guard" not in status
    [state] = [c for c in relay.json("class", "status") if c["class"] == "bulk"]
    assert (state["paused"], state["changed_by"]) == (True, actor)

    bulk_mail = message("news", "X-Message-Class: bulk\r\n")
    _code, reply = wait_until(
        lambda: (r := send(relay, ["reader@example.org"], bulk_mail))[0] == 451 and r,
        what="the intake to refuse bulk mail",
    )
    assert reply.decode() == (
        f"4.7.1 Class bulk is paused by {actor} (list cleanup under way); try again later"
    )

    relay.cli("class", "resume", "bulk", check=True)
    relay.cli("class", "pause", "bulk", check=True)  # no reason given
    _code, reply = wait_until(
        lambda: (r := send(relay, ["reader@example.org"], bulk_mail))[0] == 451 and b"(" not in r[1] and r,
        what="the reply without a reason",
    )
    assert reply.decode() == f"4.7.1 Class bulk is paused by {actor}; try again later"


def serve_stderr(tmp_path: Path, config_text: str) -> str:
    """Start `serve --sandbox`, wait until it listens, stop it, and return what it wrote to stderr."""
    tmp_path.mkdir()
    config = tmp_path / "guard.toml"
    config.write_text(config_text)
    cmd = [SES_RELAY, "serve", "--sandbox", "--listen", f"127.0.0.1:{free_port()}",
           "--data-dir", str(tmp_path / "data"), "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            if "listening on" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err


def test_serve_warns_at_start_when_guard_alerts_go_nowhere(tmp_path: Path) -> None:
    warning = "[guard] alert_to is not set: when the reputation guard pauses a class, nobody is mailed"
    err = serve_stderr(tmp_path / "bare", "")
    assert err.count(warning) == 1, err  # serve warns; the worker it starts does not repeat it
    assert warning not in serve_stderr(tmp_path / "alerted", '[guard]\nalert_to = "ops@example.com"\n')
    assert warning not in serve_stderr(tmp_path / "off", "[guard]\nenabled = false\n")
