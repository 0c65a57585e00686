"""Engagement-aware escalation end to end: `ses-relay feedback replay` into a real store.

An open, then six transient bounces within a day: the reader's mailbox is full, not
dead, so the address stays soft-suppressed. The same six bounces without the open
escalate to hard at the fifth, as the policy table says.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES, cli_json, run_cli

ADDRESS = "reader@example.com"
START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def open_event(at: datetime) -> dict[str, Any]:
    event = json.loads((FIXTURES / "event_open.json").read_text(encoding="utf-8"))
    event["mail"]["destination"] = [ADDRESS]
    event["mail"]["timestamp"] = stamp(at - timedelta(minutes=5))
    event["open"]["timestamp"] = stamp(at)
    return event


def transient_bounce(n: int, at: datetime) -> dict[str, Any]:
    event = json.loads((FIXTURES / "notification_bounce_transient.json").read_text(encoding="utf-8"))
    event["mail"]["messageId"] = f"engagement-replay-{n}"
    event["mail"]["destination"] = [ADDRESS]
    event["mail"]["timestamp"] = stamp(at - timedelta(minutes=1))
    event["bounce"]["feedbackId"] = f"engagement-replay-feedback-{n}"
    event["bounce"]["timestamp"] = stamp(at)
    event["bounce"]["bouncedRecipients"][0]["emailAddress"] = ADDRESS
    return event


def replay(tmp_path: Path, name: str, docs: list[dict[str, Any]]) -> Path:
    data = tmp_path / name
    events = tmp_path / f"{name}.jsonl"
    events.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    done = run_cli("feedback", "replay", str(events), data_dir=data, check=True)
    assert f"applied {len(docs)} event(s)" in done.stdout
    return data


def suppression(data: Path) -> dict[str, Any]:
    [entry] = cli_json("suppression", "show", ADDRESS, data_dir=data)["suppressions"]
    return entry


def test_an_open_keeps_six_transient_bounces_soft_and_without_it_they_escalate(tmp_path: Path) -> None:
    bounces = [transient_bounce(n, START + timedelta(hours=n)) for n in range(1, 7)]

    engaged = replay(tmp_path, "engaged", [open_event(START), *bounces])
    entry = suppression(engaged)
    assert (entry["class"], entry["level"], entry["cause"]) == ("*", "soft", "bounce")
    assert entry["reason"].startswith("Transient/MailboxFull")
    kinds = [e["kind"] for e in cli_json("events", "list", "--since", "5200w", data_dir=engaged)]
    assert sorted(kinds) == ["bounce"] * 6 + ["open"]

    unengaged = replay(tmp_path, "unengaged", bounces)
    entry = suppression(unengaged)
    assert (entry["class"], entry["level"], entry["cause"]) == ("*", "hard", "bounce")
    assert entry["reason"].startswith("6 transient bounces within 1d; last Transient/MailboxFull")
    assert "opened or clicked" not in entry["reason"]


def test_an_open_older_than_the_engaged_window_does_not_count(tmp_path: Path) -> None:
    bounces = [transient_bounce(n, START + timedelta(hours=n)) for n in range(1, 6)]
    stale = replay(tmp_path, "stale", [open_event(START - timedelta(days=31)), *bounces])
    assert suppression(stale)["level"] == "hard"
