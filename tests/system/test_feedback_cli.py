"""Feedback through the CLI as a user runs it: `ses-relay feedback replay`, then the listings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES, cli_json, run_cli


def save(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    return path


def test_a_minimal_bounce_without_timestamps_suppresses_the_address(tmp_path: Path) -> None:
    """Hand-made events and other libraries' fixtures carry no timestamp: still a bounce."""
    data = tmp_path / "data"
    bounce = {
        "notificationType": "Bounce",
        "mail": {"messageId": "minimal-bounce-1", "destination": ["gone@example.org"]},
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "Gone@Example.org"}],
        },
    }
    envelope = {  # the same kind of event, wrapped by SNS: dated by the envelope
        "Type": "Notification",
        "MessageId": "2c6b8d1e-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-bounces",
        "Timestamp": "2025-05-04T03:02:01.000Z",
        "Message": json.dumps(
            {
                "notificationType": "Bounce",
                "mail": {"messageId": "minimal-bounce-2"},
                "bounce": {
                    "bounceType": "Permanent",
                    "bouncedRecipients": [{"emailAddress": "old@example.org"}],
                },
            }
        ),
    }
    events = save(tmp_path / "minimal.jsonl", bounce, envelope)
    run_cli("feedback", "replay", str(events), data_dir=data, check=True)

    assert cli_json("feedback", "dead-letters", data_dir=data) == []
    shown = cli_json("suppression", "show", "gone@example.org", data_dir=data)
    [entry] = shown["suppressions"]
    assert (entry["class"], entry["level"], entry["cause"]) == ("*", "hard", "bounce")
    assert entry["ses_message_id"] == "minimal-bounce-1"
    assert cli_json("suppression", "show", "old@example.org", data_dir=data)["suppressions"]

    logged = {e["recipient"]: e for e in cli_json("events", "list", "--since", "5200w", data_dir=data)}
    assert logged["old@example.org"]["time"].startswith("2025-05-04T03:02:01")  # SNS's Timestamp
    assert logged["gone@example.org"]["time"][:10] == logged["gone@example.org"]["received_at"][:10]

    # Replaying the same file again is a redelivery: nothing new is logged.
    run_cli("feedback", "replay", str(events), data_dir=data, check=True)
    assert len(cli_json("events", "list", "--since", "5200w", data_dir=data)) == 2


def test_a_complaint_reason_names_the_complaint_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    complaint = json.loads((FIXTURES / "event_complaint.json").read_text(encoding="utf-8"))
    address = complaint["complaint"]["complainedRecipients"][0]["emailAddress"].lower()
    run_cli("feedback", "replay", str(save(tmp_path / "c.json", complaint)), data_dir=data, check=True)

    [entry] = cli_json("suppression", "show", address, data_dir=data)["suppressions"]
    assert (entry["cause"], entry["reason"]) == ("complaint", "abuse")
    [listed] = cli_json("suppression", "list", data_dir=data)
    assert (listed["cause"], listed["reason"]) == ("complaint", "abuse")

    text = run_cli("suppression", "show", address, data_dir=data, check=True).stdout
    assert "cause:    complaint: abuse\n" in text
    assert "complaint: complaint" not in text
    listing = run_cli("suppression", "list", data_dir=data, check=True).stdout
    assert "complaint: abuse" in listing and "complaint: complaint" not in listing
    forced = ("--force", "--reason", "asked to be mailed again")  # a complaint's clear is guarded
    cleared = run_cli("suppression", "clear", address, *forced, data_dir=data, check=True).stdout
    assert "permanent complaint: abuse" in cleared and "complaint: complaint" not in cleared
