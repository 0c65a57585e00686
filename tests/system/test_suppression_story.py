"""`suppression show`'s history and `suppression clear`'s guard-rails, through the CLI as an
admin runs them: events replayed from files, adds, imports, pulls from SES's list, clears.

The history answers "why is this blocked, since when, and is it still saving us?" in
one command; a clear of a complaint, an unsubscribe or an entry from SES's account-level
list takes --force and --reason, all clears together are limited per day, and an
address that bounces again soon after a clear comes back for twice as long.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from relay.timeutil import from_text, utcnow
from tests.conftest import FIXTURES, ROOT, cli_json, run_cli
from tests.support.sesv2_gaps import SesV2Gaps
from tests.support.sns_sqs import bounce, complaint, ses_mail

ACTOR = f"cli:{getpass.getuser()}"
PROVIDERS = ROOT / "tests" / "fixtures" / "providers"


def replay(tmp_path: Path, data: Path, *docs: dict[str, Any], config: Path | None = None) -> None:
    """Apply SES events as `feedback replay` does, from a JSON Lines file."""
    path = tmp_path / f"events-{len(list(tmp_path.glob('events-*')))}.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    run_cli("feedback", "replay", str(path), data_dir=data, config=config, check=True)


def mail(message_id: str, address: str) -> dict[str, Any]:
    return ses_mail(message_id, [address], tags=False)  # an identity notification: class unknown


def show(data: Path, address: str, config: Path | None = None) -> dict[str, Any]:
    return cli_json("suppression", "show", address, data_dir=data, config=config)


def policy(tmp_path: Path, **keys: object) -> Path:
    path = tmp_path / "ses-relay.toml"
    path.write_text("[policy]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
    return path


# -------------------------------------------------------------------------- the story


def test_show_tells_the_whole_story_of_an_address_oldest_first(tmp_path: Path) -> None:
    data, addr = tmp_path / "d", "gone@example.com"
    replay(tmp_path, data, bounce(mail("m-1", addr), [addr], "Transient", "MailboxFull", fid="fb-1"))
    replay(tmp_path, data, bounce(mail("m-2", addr), [addr], "Permanent", "General", fid="fb-2"))
    phoned = ("--class", "bulk", "--reason", "asked on the phone")
    run_cli("suppression", "add", addr, *phoned, data_dir=data, check=True)
    imported = run_cli("suppression", "import", str(PROVIDERS / "sendgrid_bounces.csv"), data_dir=data)
    assert imported.returncode == 1  # the file's bad rows; its good ones are in
    wrong = ("--class", "bulk", "--reason", "wrong address")
    run_cli("suppression", "clear", addr, *wrong, data_dir=data, check=True)

    shown = show(data, addr)
    [entry] = shown["suppressions"]
    events = {
        e["ses_message_id"]: e["id"] for e in cli_json("events", "list", "--since", "1h", data_dir=data)
    }
    steps = [(s["change"], s["class"], s["source"], s["actor"], s["level"]) for s in shown["history"]]
    assert steps == [
        ("created", "*", "event", "feedback", "soft"),
        ("raised", "*", "event", "feedback", "hard"),
        ("created", "bulk", "admin", ACTOR, "hard"),
        ("extended", "*", "import", ACTOR, "hard"),  # SendGrid's never-expiring bounce extends ours
        ("cleared", "bulk", "admin", ACTOR, "hard"),
    ]
    created, raised, added, imported, cleared = shown["history"]
    assert (created["event_id"], created["ses_message_id"], created["feedback_id"]) == (
        events["m-1"],
        "m-1",
        "fb-1",
    )
    assert (raised["event_id"], raised["ses_message_id"], raised["feedback_id"]) == (
        events["m-2"],
        "m-2",
        "fb-2",
    )
    assert raised["reason"].startswith("Permanent/General") and raised["expires_at"] is not None
    assert added["note"] == "asked on the phone"
    assert (
        imported["note"] == "from sendgrid_bounces.csv, SendGrid bounces" and imported["expires_at"] is None
    )
    assert cleared["note"] == "wrong address" and cleared["reason"] == "asked on the phone"
    assert [from_text(s["at"]) for s in shown["history"]] == sorted(
        from_text(s["at"]) for s in shown["history"]
    )
    assert (entry["class"], entry["level"], entry["expires_at"], entry["refused_count"]) == (
        "*",
        "hard",
        None,
        0,
    )

    text = run_cli("suppression", "show", addr, data_dir=data, check=True).stdout
    story = text[text.index("history (oldest first):") :].splitlines()
    assert "all classes: created: soft bounce, expires" in story[1]
    assert story[2] == f"      by SES event #{events['m-1']} (SES message m-1, feedback fb-1)"
    assert "all classes: raised: hard bounce, expires" in story[3] and "Permanent/General" in story[3]
    assert story[5].endswith("class bulk: created: hard manual, never expires: asked on the phone")
    assert story[6] == f"      by {ACTOR}"  # the admin's words are the entry's reason: said once
    assert story[7].endswith(
        "all classes: extended: hard bounce, never expires: imported from SendGrid bounces: "
        "5.1.1: 550 5.1.1 The email account that you tried to reach does not exist. Please "
        "try double-checking the recipient's email address for typos or unnecessary spaces."
    )
    assert story[8] == f"      by {ACTOR} (import): from sendgrid_bounces.csv, SendGrid bounces"
    assert "class bulk: cleared: was hard manual, never expires: asked on the phone; " \
           "it had refused 0 send(s)" \
        in story[9]  # fmt: skip
    assert story[10] == f"      by {ACTOR}: wrong address"
    assert len(story) == 11


def test_show_marks_where_an_entry_expired_and_answers_for_an_address_no_longer_blocked(
    tmp_path: Path,
) -> None:
    data, addr = tmp_path / "d", "brief@example.com"
    # An entry that lapses a second after it is made: an imported row that says so.
    csv_path = tmp_path / "lapsing.csv"
    soon = utcnow() + timedelta(seconds=1)
    csv_path.write_text(
        f"email,reason,class,expires_at,level,cause\n{addr},BOUNCE,*,{soon.isoformat()},soft,bounce\n"
    )
    run_cli("suppression", "import", str(csv_path), data_dir=data, check=True)
    wait_past(soon)
    shown = show(data, addr)
    assert [s["change"] for s in shown["history"]] == ["created", "expired"]
    assert (
        shown["history"][1]["at"] == shown["history"][0]["expires_at"]
        and shown["history"][1]["actor"] is None
    )
    assert [s["active"] for s in shown["suppressions"]] == [False]
    text = run_cli("suppression", "show", addr, data_dir=data, check=True).stdout
    assert (
        "all classes, soft, expired" in text
        and "all classes: expired: the soft bounce entry no longer blocks" in text
    )

    never = run_cli("suppression", "show", "nobody@example.com", data_dir=data, check=True).stdout
    assert never == "nobody@example.com is not suppressed\n"
    assert show(data, "nobody@example.com") == {
        "address": "nobody@example.com",
        "suppressions": [],
        "history": [],
    }


def wait_past(moment: datetime) -> None:
    import time

    for _ in range(40):  # bounded: at most 4 s
        if utcnow() > moment:
            return
        time.sleep(0.1)
    pytest.fail(f"the clock did not pass {moment}")


# -------------------------------------------------------------------------- guard-rails


def test_clearing_a_complaint_takes_force_and_a_reason_and_every_refusal_says_why(tmp_path: Path) -> None:
    data, addr = tmp_path / "d", "angry@example.org"
    replay(tmp_path, data, complaint(mail("m-9", addr), [addr]))

    for extra, missing in [((), "--force, --reason TEXT"), (("--force",), "--reason TEXT"),
                           (("--reason", "they asked"), "--force")]:  # fmt: skip
        refused = run_cli("suppression", "clear", addr, *extra, data_dir=data)
        assert refused.returncode == 1, refused
        lines = refused.stderr.splitlines()
        assert lines[0] == f"ses-relay: not cleared: {addr}"
        assert lines[1].startswith("  all classes: permanent complaint since ") and lines[1].endswith(
            ", never expires: abuse"
        )
        assert lines[2] == (
            "    guarded: a complaint: the recipient reported this mail as spam, "
            "and complaints are what get SES accounts reviewed"
        )
        assert lines[3] == (
            "  an entry caused by a complaint, an unsubscribe or SES's account-level list is cleared "
            f"only with --force and --reason TEXT (kept in its history); missing: {missing}"
        )
        assert lines[4] == "  clears left today: 100 of 100 (the last 24 hours)"
        assert refused.stdout == ""
        assert [e["cause"] for e in show(data, addr)["suppressions"]] == ["complaint"]

    done = run_cli(
        "suppression", "clear", addr, "--force", "--reason", "they asked", data_dir=data, check=True
    )
    assert done.stdout.splitlines() == [
        f"cleared {addr} in class * (was permanent complaint: abuse)",
        "clears left today: 99 of 100 (the last 24 hours)",
    ]
    shown = show(data, addr)
    assert shown["suppressions"] == []
    assert [(s["change"], s["actor"], s["note"]) for s in shown["history"]] == [
        ("created", "feedback", "abuse"),
        ("cleared", ACTOR, "they asked (--force)"),
    ]


def test_clearing_an_unsubscribe_takes_force_and_a_reason(tmp_path: Path) -> None:
    data, addr = tmp_path / "d", "leaving@example.com"
    event = json.loads((FIXTURES / "event_subscription.json").read_text(encoding="utf-8"))
    replay(tmp_path, data, event)
    refused = run_cli("suppression", "clear", addr, "--class", "list", data_dir=data)
    assert refused.returncode == 1
    assert "  class list: permanent unsubscribe since " in refused.stderr
    assert "    guarded: an unsubscribe: the recipient asked for no more of this mail" in refused.stderr
    run_cli(
        "suppression",
        "clear",
        addr,
        "--force",
        "--reason",
        "re-subscribed by form",
        data_dir=data,
        check=True,
    )
    assert show(data, addr)["suppressions"] == []


def test_an_entry_imported_from_sess_list_takes_force_and_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "d"
    run_cli("suppression", "import", str(PROVIDERS / "ses_suppressed_destinations.json"), data_dir=data)
    [row] = show(data, "bounced@example.com")["history"]
    assert (row["source"], row["note"]) == (
        "ses-list",
        "from ses_suppressed_destinations.json, SES account-level list",
    )
    refused = run_cli("suppression", "clear", "bounced@example.com", data_dir=data)
    assert refused.returncode == 1
    assert "  all classes: hard bounce since 2024-02-10T14:21:05.123000Z, never expires" in refused.stderr
    assert "    guarded: from SES's account-level list: SES itself suppresses the address for the whole " \
           "account" in refused.stderr  # fmt: skip
    # A bounce from another provider's export is ours to clear.
    run_cli("suppression", "import", str(PROVIDERS / "sendgrid_bounces.csv"), data_dir=data)
    run_cli("suppression", "clear", "gone@example.com", data_dir=data, check=True)


@pytest.fixture
def aws(moto_server: str) -> Iterator[SesV2Gaps]:
    with SesV2Gaps(moto_server) as gaps:
        yield gaps


def test_an_entry_pulled_from_sess_list_takes_force_and_a_reason(tmp_path: Path, aws: SesV2Gaps) -> None:
    data, config = tmp_path / "d", tmp_path / "ses-relay.toml"
    config.write_text(f'[ses]\nregion = "us-east-1"\nendpoint_url = "{aws.url}"\n')
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=aws.url).put_suppressed_destination(
        EmailAddress="pulled@example.com", Reason="BOUNCE"
    )
    run_cli("suppression", "sync-ses", "--pull", data_dir=data, config=config, check=True)
    [row] = show(data, "pulled@example.com", config)["history"]
    assert (row["change"], row["source"], row["actor"]) == ("created", "ses-list", ACTOR)
    refused = run_cli("suppression", "clear", "pulled@example.com", data_dir=data, config=config)
    assert refused.returncode == 1 and "from SES's account-level list" in refused.stderr
    run_cli("suppression", "clear", "pulled@example.com", "--force", "--reason", "removed at SES too",
            data_dir=data, config=config, check=True)  # fmt: skip


def test_at_most_max_clears_per_day_across_admins_unless_forced(tmp_path: Path) -> None:
    data, config = tmp_path / "d", policy(tmp_path, max_clears_per_day=2)
    for i in range(4):
        run_cli("suppression", "add", f"u{i}@example.com", data_dir=data, config=config, check=True)
    first = run_cli("suppression", "clear", "u0@example.com", data_dir=data, config=config, check=True)
    assert first.stdout.splitlines()[-1] == "clears left today: 1 of 2 (the last 24 hours)"
    other = {"USER": "bob", "LOGNAME": "bob"}  # another admin: the limit is everyone's
    second = run_cli(
        "suppression", "clear", "u1@example.com", data_dir=data, config=config, check=True, env=other
    )
    assert second.stdout.splitlines()[-1] == "clears left today: 0 of 2 (the last 24 hours)"

    refused = run_cli(
        "suppression", "clear", "u2@example.com", "--reason", "fixed", data_dir=data, config=config
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[1:] == [
        refused.stderr.splitlines()[1],
        "  2 clear(s) in the last 24 hours; 1 more would pass [policy] max_clears_per_day = 2 "
        "(--force goes past it)",
        "  clears left today: 0 of 2 (the last 24 hours)",
    ]
    assert refused.stderr.splitlines()[1].startswith("  all classes: hard manual since ")
    assert show(data, "u2@example.com", config)["suppressions"]

    forced = run_cli(
        "suppression", "clear", "u2@example.com", "--force", data_dir=data, config=config, check=True
    )
    assert forced.stdout.splitlines()[-1] == "clears left today: 0 of 2 (the last 24 hours)"
    history = show(data, "u1@example.com", config)["history"]
    assert history[-1]["actor"] == "cli:bob"


def test_a_blank_reason_is_a_usage_error_and_nothing_to_clear_fails(tmp_path: Path) -> None:
    data = tmp_path / "d"
    run_cli("suppression", "add", "x@example.com", data_dir=data, check=True)
    blank = run_cli("suppression", "clear", "x@example.com", "--reason", "  ", data_dir=data)
    assert blank.returncode == 2 and "--reason: say why, in words" in blank.stderr
    assert show(data, "x@example.com")["suppressions"]
    nothing = run_cli("suppression", "clear", "y@example.com", data_dir=data)
    assert nothing.returncode == 1 and "y@example.com has no suppression" in nothing.stderr


# -------------------------------------------------------------------------- bounced again after a clear


def test_a_bounce_within_a_week_of_a_clear_comes_back_for_twice_as_long(tmp_path: Path) -> None:
    data, addr = tmp_path / "d", "back@example.com"
    replay(tmp_path, data, bounce(mail("m-1", addr), [addr], "Permanent", "General"))
    run_cli("suppression", "clear", addr, "--reason", "customer fixed the mailbox", data_dir=data, check=True)
    cleared = show(data, addr)["history"][-1]
    assert (cleared["change"], cleared["window_seconds"]) == ("cleared", 30 * 86400)

    replay(tmp_path, data, bounce(mail("m-2", addr), [addr], "Transient", "General"))
    [entry] = show(data, addr)["suppressions"]
    assert entry["level"] == "hard"
    lasts = from_text(entry["expires_at"]) - from_text(entry["updated_at"])
    assert lasts == timedelta(days=60)
    assert (
        entry["reason"].startswith("bounced again ")
        and ": twice the cleared entry's 30d; Transient/General" in (entry["reason"])
    )
    last = show(data, addr)["history"][-1]
    assert (last["change"], last["source"], last["ses_message_id"]) == ("created", "event", "m-2")
    assert last["reason"] == entry["reason"]
    text = run_cli("suppression", "show", addr, data_dir=data, check=True).stdout
    assert "twice the cleared entry's 30d" in text.splitlines()[-2]


def test_the_window_after_a_clear_is_reclear_window(tmp_path: Path) -> None:
    data, config = tmp_path / "d", policy(tmp_path, reclear_window="1d")
    cleared_at = {}
    for addr in ("soon@example.com", "later@example.com"):
        replay(tmp_path, data, bounce(mail(f"m-{addr}", addr), [addr], "Permanent", "General"), config=config)
        run_cli("suppression", "clear", addr, data_dir=data, config=config, check=True)
        # When the clear happened, as it was recorded (SES times are in whole milliseconds).
        recorded = show(data, addr, config)["history"][-1]["at"]
        cleared_at[addr] = from_text(recorded) + timedelta(milliseconds=1)
    soon = bounce(mail("m-soon-2", "soon@example.com"), ["soon@example.com"], "Transient", "General",
                  at=cleared_at["soon@example.com"] + timedelta(hours=12))  # fmt: skip
    later = bounce(mail("m-later-2", "later@example.com"), ["later@example.com"], "Transient", "General",
                   at=cleared_at["later@example.com"] + timedelta(days=2))  # fmt: skip
    replay(tmp_path, data, soon, later, config=config)
    [doubled] = show(data, "soon@example.com", config)["suppressions"]
    [ordinary] = show(data, "later@example.com", config)["suppressions"]
    assert doubled["level"] == "hard" and doubled["reason"].startswith("bounced again 12h after a clear")
    assert ordinary["level"] == "soft" and "after a clear" not in ordinary["reason"]
