"""The command line as a newcomer meets it, run as real processes.

However it is started (`ses-relay`, `python -m cli`), the same commands answer; the
common options work before the subcommand as well as after it; a read command
pointed at the wrong data dir says so instead of answering from a new, empty store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SES_RELAY, child_env, free_port, wait_until
from tests.support.security import PASSWORD, add_user
from tests.support.smtp import message, send, smtp, submission_id

BOUNCE = "bounce@simulator.amazonses.com"


def commands_in_help(text: str) -> list[str]:
    """The names listed under "Commands:" in click's help output."""
    lines = text.splitlines()
    start = lines.index("Commands:") + 1
    return [line.split()[0] for line in lines[start:] if line.startswith("  ") and line.split()]


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(env), timeout=60, cwd=cwd)


def test_python_dash_m_cli_lists_every_command_the_entry_point_lists(tmp_path: Path) -> None:
    entry = run([SES_RELAY, "--help"])
    assert entry.returncode == 0, entry.stderr
    expected = commands_in_help(entry.stdout)
    assert {"serve", "worker", "suppression", "submission", "user", "class", "stats"} <= set(expected)

    # From another directory, as serve starts its worker: the installed module, not a file here.
    module = run([sys.executable, "-m", "cli", "--help"], cwd=tmp_path)
    assert module.returncode == 0, module.stderr
    assert commands_in_help(module.stdout) == expected

    for group in ("user", "suppression", "class"):
        via_entry = run([SES_RELAY, group, "--help"])
        via_module = run([sys.executable, "-m", "cli", group, "--help"], cwd=tmp_path)
        assert via_module.returncode == 0, via_module.stderr
        assert commands_in_help(via_module.stdout) == commands_in_help(via_entry.stdout), group
    assert {"add", "list", "remove"} <= set(commands_in_help(run([SES_RELAY, "user", "--help"]).stdout))


# -- a read command pointed at the wrong data dir ---------------------------------------

READ_COMMANDS = [
    ["submission", "show", "0123456789ab01234567"],
    ["submission", "list"],
    ["suppression", "list"],
    ["suppression", "show", "someone@example.org"],
    ["suppression", "export"],
    ["suppression", "sync-ses", "--push", "--dry-run"],
    ["stats"],
    ["events", "list"],
    ["notices", "list"],
    ["report"],
    ["class", "status"],
    ["feedback", "dead-letters"],
    ["feedback", "review"],
    ["user", "list"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_command_on_a_missing_data_dir_fails_names_it_and_creates_nothing(
    command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    nowhere = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # sync-ses must not reach AWS
    result = run([SES_RELAY, *command, "--data-dir", str(missing)], env=nowhere)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr
    assert "--data-dir" in result.stderr and "SES_RELAY_DATA_DIR" in result.stderr
    assert result.stdout == ""
    assert not missing.exists()

    # The same through the environment, the way a service's shell has it set.
    by_env = run([SES_RELAY, *command], cwd=tmp_path, env={**nowhere, "SES_RELAY_DATA_DIR": str(missing)})
    assert by_env.returncode == 2 and str(missing) in by_env.stderr
    assert not missing.exists()


def test_read_command_on_a_data_dir_without_a_store_fails_and_leaves_it_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run([SES_RELAY, "suppression", "list", "--data-dir", str(empty)])
    assert result.returncode == 2
    assert f"data dir {empty} has no store (relay.db)" in result.stderr
    assert list(empty.iterdir()) == []
    # Without --data-dir the default is ./ses-relay-data, named in full.
    default = run([SES_RELAY, "stats"], cwd=tmp_path)
    assert default.returncode == 2 and str(tmp_path / "ses-relay-data") in default.stderr
    assert not (tmp_path / "ses-relay-data").exists()


def test_write_commands_still_create_the_data_dir_and_reads_then_answer(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    added = run([SES_RELAY, "suppression", "add", "gone@example.org", "--data-dir", str(data)])
    assert added.returncode == 0, added.stderr
    assert (data / "relay.db").is_file()
    listed = run([SES_RELAY, "suppression", "list", "--json", "--data-dir", str(data)])
    assert listed.returncode == 0, listed.stderr
    assert [e["address"] for e in json.loads(listed.stdout)] == ["gone@example.org"]
    # A fresh store with nothing in it is an answer, not an error.
    fresh = tmp_path / "fresh"
    assert run([SES_RELAY, "class", "pause", "bulk", "--data-dir", str(fresh)]).returncode == 0
    assert run([SES_RELAY, "events", "list", "--data-dir", str(fresh)]).stdout.strip() == "no events"


# -- common options before or after the subcommand ---------------------------------------


def test_common_options_work_before_the_subcommand_and_the_later_one_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for data, address in ((first, "one@example.org"), (second, "two@example.org")):
        assert run([SES_RELAY, "suppression", "add", address, "--data-dir", str(data)]).returncode == 0

    def listed(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = run([SES_RELAY, *args], cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return [e["address"] for e in json.loads(result.stdout)]

    assert listed("--data-dir", str(first), "suppression", "list", "--json") == ["one@example.org"]
    assert listed("suppression", "list", "--json", "--data-dir", str(second)) == ["two@example.org"]
    both = ("--data-dir", str(first), "suppression", "list", "--json", "--data-dir", str(second))
    assert listed(*both) == ["two@example.org"]
    # Given before the subcommand, it still beats the environment.
    env = {"SES_RELAY_DATA_DIR": str(second)}
    assert listed("--data-dir", str(first), "suppression", "list", "--json", env=env) == ["one@example.org"]
    assert listed("suppression", "list", "--json", env=env) == ["two@example.org"]

    # --config: only the file that configures class "promo" accepts --class promo.
    promo = tmp_path / "promo.toml"
    promo.write_text('default_class = "promo"\n[classes.promo]\nconfiguration_set = "promo"\n')
    plain = tmp_path / "plain.toml"
    plain.write_text("")
    ok = run([SES_RELAY, "--config", str(promo), "suppression", "list", "--class", "promo",
              "--data-dir", str(first)])  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    later = run([SES_RELAY, "--config", str(promo), "suppression", "list", "--class", "promo",
                 "--data-dir", str(first), "--config", str(plain)])  # fmt: skip
    assert later.returncode == 2 and "unknown class 'promo'" in later.stderr
    bad = run([SES_RELAY, "--config", str(tmp_path / "nope.toml"), "stats", "--data-dir", str(first)])
    assert bad.returncode == 2 and "nope.toml does not exist" in bad.stderr

    # --log-level: debug before the subcommand logs at debug; error after it silences that.
    debug = run([SES_RELAY, "--log-level", "debug", "stats", "--data-dir", str(first)])
    assert debug.returncode == 0 and " DEBUG " in debug.stderr
    quiet = run([SES_RELAY, "--log-level", "debug", "stats", "--data-dir", str(first),
                 "--log-level", "error"])  # fmt: skip
    assert quiet.returncode == 0 and " DEBUG " not in quiet.stderr


# -- submission list / show --------------------------------------------------------------


def test_submission_list_newest_first_with_filters(relay_factory: Any) -> None:
    relay = relay_factory(sandbox=True)
    ids = []
    for subject, sender, rcpts in [
        ("first", "app@example.com", ["success@simulator.amazonses.com"]),
        ("second", "shop@example.com", [BOUNCE, "success@simulator.amazonses.com"]),
        ("third", "app@example.com", ["ok@example.org"]),
    ]:
        code, reply = send(relay, rcpts, message(subject), sender=sender)
        assert code == 250
        ids.append(submission_id(reply))
    newest_first = ids[::-1]
    settled = ("delivered", "bounced")
    wait_until(
        lambda: all(r["status"] in settled for s in relay.json("submission", "list") for r in s["recipients"])
        and len(relay.json("submission", "list")) == 3,
        what="every recipient delivered or bounced",
    )

    listed = relay.json("submission", "list")
    assert [s["id"] for s in listed] == newest_first
    second = listed[1]
    assert (second["subject"], second["mail_from"]) == ("second", "shop@example.com")
    assert {r["address"]: r["status"] for r in second["recipients"]} == {
        BOUNCE: "bounced", "success@simulator.amazonses.com": "delivered",
    }  # fmt: skip
    assert second == relay.json("submission", "show", ids[1])  # the same shape as show

    def listed_ids(*args: str) -> list[str]:
        return [s["id"] for s in relay.json("submission", "list", *args)]

    assert listed_ids("--sender", "App@Example.COM") == [ids[2], ids[0]]
    assert listed_ids("--status", "bounced") == [ids[1]]
    assert listed_ids("--status", "delivered") == newest_first
    assert listed_ids("--status", "complained") == []
    assert listed_ids("--limit", "1") == [ids[2]]
    assert listed_ids("--since", "1h") == newest_first
    time.sleep(1.1)
    assert listed_ids("--since", "1s") == []

    human = relay.cli("submission", "list", "--sender", "shop@example.com", check=True).stdout
    assert ids[1] in human and "1 bounced" in human and "1 delivered" in human and "second" in human
    assert relay.cli("submission", "list", "--since", "1s", check=True).stdout.strip() == (
        "no submissions in the last 1s"
    )
    for bad in (["--since", "yesterday"], ["--status", "lost"], ["--limit", "0"], ["--sender", "nobody"]):
        result = relay.cli("submission", "list", *bad)
        assert result.returncode == 2, bad


def test_submission_show_names_the_authenticated_user_and_the_client_address(
    relay_factory: Any, tmp_path: Path
) -> None:
    add_user(tmp_path / "data", "shop", "@example.com")
    relay = relay_factory("[auth]\nallow_plaintext_loopback = true\n", sandbox=True)
    with smtp(relay) as client:
        client.login("shop", PASSWORD)
        assert client.mail("orders@example.com")[0] == 250
        assert client.rcpt("buyer@example.org")[0] == 250
        code, reply = client.data(message("order 7").replace(b"app@example.com", b"orders@example.com"))
    assert code == 250
    authed = relay.json("submission", "show", submission_id(reply))
    assert (authed["auth_user"], authed["client_ip"]) == ("shop", "127.0.0.1")

    code, reply = send(relay, ["buyer@example.org"], message("no auth"))  # loopback may relay without AUTH
    assert code == 250
    plain = relay.json("submission", "show", submission_id(reply))
    assert (plain["auth_user"], plain["client_ip"]) == (None, "127.0.0.1")
    human = relay.cli("submission", "show", authed["id"], check=True).stdout
    assert "from 127.0.0.1 (user shop)" in human
    assert [s["auth_user"] for s in relay.json("submission", "list")] == [None, "shop"]


# -- configuration: list-valued keys --------------------------------------------------------

SINGLE_STRINGS = """\
[guard]
alert_to = "Ops@Example.com"
[report]
daily_to = "ops@example.com, postmaster@example.com"
[feedback]
queue_urls = "https://sqs.us-east-1.amazonaws.com/123456789012/ses-relay-bulk-events"
sns_topic_arns = "arn:aws:sns:us-east-1:123456789012:ses-relay-bulk-events"
[[listeners]]
listen = "127.0.0.1:2525"
allow_networks = "10.0.0.0/8"
"""


def test_every_list_valued_key_also_takes_a_single_string(tmp_path: Path) -> None:
    from relay import config as configuration

    config = tmp_path / "one.toml"
    config.write_text(SINGLE_STRINGS)
    data = tmp_path / "data"
    paused = run([SES_RELAY, "class", "pause", "bulk", "--config", str(config), "--data-dir", str(data)])
    assert paused.returncode == 0, paused.stderr
    status = run([SES_RELAY, "--config", str(config), "class", "status", "--data-dir", str(data)])
    assert status.returncode == 0, status.stderr

    loaded = configuration.load(config)
    assert loaded.guard.alert_to == ("ops@example.com",)
    assert loaded.report.daily_to == ("ops@example.com", "postmaster@example.com")
    assert loaded.feedback.queue_urls == (
        "https://sqs.us-east-1.amazonaws.com/123456789012/ses-relay-bulk-events",
    )
    assert loaded.feedback.sns_topic_arns == ("arn:aws:sns:us-east-1:123456789012:ses-relay-bulk-events",)
    assert loaded.listeners[0].allow_networks == ("10.0.0.0/8",)
    # The list form still works and means the same.
    listed = SINGLE_STRINGS.replace('"Ops@Example.com"', '["Ops@Example.com"]')
    assert configuration.from_dict(tomllib.loads(listed)) == loaded

    # Each string is still checked: a bad address or network is an error naming the key.
    for key, bad, named in [
        ('alert_to = "Ops@Example.com"', 'alert_to = "not an address"', "guard.alert_to: 'not an address'"),
        ('allow_networks = "10.0.0.0/8"', 'allow_networks = "10.0.0.0/33"', "listeners[0].allow_networks"),
        ('alert_to = "Ops@Example.com"', "alert_to = 7", "guard.alert_to: Input should be a valid tuple"),
    ]:
        config.write_text(SINGLE_STRINGS.replace(key, bad))
        result = run([SES_RELAY, "class", "status", "--config", str(config), "--data-dir", str(data)])
        assert result.returncode == 2 and named in result.stderr, (bad, result.stderr)
