"""stats and the reputation guard, from replayed SES events through the real CLI and serve."""

from __future__ import annotations

import json
import mailbox
from datetime import timedelta
from pathlib import Path

import pytest

from relay.config import GuardConfig
from relay.guard import verdict
from relay.sandbox import Bounce, bounce_event, build_mail, complaint_event, delivery_event, send_event
from relay.ses_api import SendRequest
from relay.stats import Counts
from relay.timeutil import utcnow
from tests.conftest import cli_json, run_cli, wait_until
from tests.test_intake import message, send

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


@pytest.mark.parametrize(
    ("counts", "paused"),
    [
        (Counts(sent=100, bounced_permanent=3), True),  # 3 % >= 2.5 %
        (Counts(sent=100, bounced_permanent=2), False),
        (Counts(sent=10, bounced_permanent=5), False),  # under min_volume
        (Counts(sent=1000, complained=1), True),  # 0.1 % >= 0.05 %
        (Counts(sent=10000, complained=4), False),
    ],
)
def test_guard_verdict_table(counts: Counts, paused: bool) -> None:
    cfg = GuardConfig(min_volume=50)
    assert (verdict(counts, cfg) is not None) is paused


def test_guard_pauses_a_class_alerts_and_resumes_by_cli(relay_factory, tmp_path: Path) -> None:
    config = (
        '[guard]\nmin_volume = 10\nbounce_rate = 0.2\ncheck_every = "1s"\nalert_to = ["admin@example.com"]\n'
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
    assert reply[:6] == b"4.7.1 "
    code, _ = send(relay, ["buyer@example.org"], message("receipt"))
    assert code == 250

    alerts = wait_until(
        lambda: (p := relay.data_dir / "sandbox" / "admin@example.com").exists() and list(mailbox.Maildir(p)),
        what="the alert to the admin",
    )
    assert "bulk" in alerts[0]["Subject"]

    relay.cli("class", "resume", "bulk", check=True)
    wait_until(lambda: send(relay, ["reader@example.org"], bulk_mail)[0] == 250, what="bulk accepted again")
