"""`[state] url`: serve, its worker and the CLI with the state in PostgreSQL (a real server).

What the relay learns (a bounce from the sandbox) lands in PostgreSQL and is enforced at
RCPT; the CLI, with the same configuration, answers from PostgreSQL whatever data dir it
is given; `state check` reports on it; the password is never printed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay.store.pg_schema import MIGRATIONS
from tests.conftest import free_port, run_cli, wait_until
from tests.support.relaydb import count_rows
from tests.support.smtp import message, send, smtp, submission_id

BOUNCE = "bounce@simulator.amazonses.com"
SUCCESS = "success@simulator.amazonses.com"
SECRET = "not-this-password"


def state_config(url: str) -> str:
    return f'[state]\nurl = "{url}"\n'


def pg_rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def test_serve_keeps_what_it_learns_in_postgresql_and_refuses_a_bounced_address_at_rcpt(
    relay_factory, pg_url: str, tmp_path: Path
) -> None:
    relay = relay_factory(state_config(pg_url), sandbox=True)
    code, reply = send(relay, [BOUNCE, SUCCESS], message("to the simulator"))
    assert code == 250
    sid = submission_id(reply)

    def bounced() -> list[dict[str, Any]]:
        return [e for e in relay.json("suppression", "list") if e["address"] == BOUNCE]

    [entry] = wait_until(bounced, timeout=15, what="the bounce simulator suppressed in PostgreSQL")
    assert (entry["class"], entry["level"], entry["cause"]) == ("*", "hard", "bounce")

    def settled() -> dict[str, str] | None:
        statuses = {r["address"]: r["status"] for r in relay.json("submission", "show", sid)["recipients"]}
        return statuses if statuses[SUCCESS] == "delivered" and statuses[BOUNCE] == "bounced" else None

    wait_until(settled, timeout=15, what="both recipients settled")
    with smtp(relay) as client:
        client.mail("app@example.com")
        code, text = client.rcpt(BOUNCE)
        assert (code, text[:6]) == (550, b"5.1.1 ")
        assert client.rcpt(SUCCESS)[0] == 250

    # PostgreSQL holds the record; the local file the spool's copy, and the mirror that RCPT
    # was answered from.
    assert [r["address"] for r in pg_rows(pg_url, "SELECT address FROM suppressions")] == [BOUNCE]
    recorded = pg_rows(pg_url, "SELECT address, status, ses_message_id FROM recipients ORDER BY address")
    assert [(r["address"], r["status"]) for r in recorded] == [(BOUNCE, "bounced"), (SUCCESS, "delivered")]
    assert all(r["ses_message_id"] for r in recorded)
    assert count_rows(relay.data_dir, "suppressions") == 1 and count_rows(relay.data_dir, "events") == 0
    assert count_rows(relay.data_dir, "spool") == 0  # sent, and the bytes dropped

    # The notice the bounce owes its sender: leased, delivered once, settled in PostgreSQL.
    def notice_sent() -> list[dict[str, Any]]:
        return [n for n in relay.json("notices", "list") if n["state"] == "sent"]

    [notice] = wait_until(notice_sent, timeout=15, what="the bounce notice delivered")
    assert notice["recipient"] == BOUNCE
    [lease] = pg_rows(pg_url, "SELECT lease_owner, lease_until FROM notices")
    assert lease == {"lease_owner": None, "lease_until": None}

    # Any data dir (even none) with the same configuration reads the same state.
    elsewhere = tmp_path / "admin-host"
    shown = run_cli("submission", "show", sid, "--json", data_dir=elsewhere, config=relay.config, check=True)
    recipients = json.loads(shown.stdout)["recipients"]
    assert {r["address"]: r["status"] for r in recipients} == {BOUNCE: "bounced", SUCCESS: "delivered"}
    assert not elsewhere.exists()


def test_the_cli_reads_and_writes_the_shared_state_with_no_data_dir(tmp_path: Path, pg_url: str) -> None:
    config = tmp_path / "ses-relay.toml"
    config.write_text(state_config(pg_url))
    nowhere = tmp_path / "no-data-dir"

    def cli(*args: str, check: bool = True) -> Any:
        return run_cli(*args, data_dir=nowhere, config=config, check=check)

    def as_json(*args: str) -> Any:
        return json.loads(cli(*args, "--json").stdout)

    assert as_json("suppression", "list") == []  # a read on an empty state: an answer, not an error
    cli("suppression", "add", "gone@example.org", "--reason", "asked to stop")
    csv_file = tmp_path / "import.csv"
    with csv_file.open("w", newline="") as fh:
        rows = [["address", "reason"], ["old@example.org", "BOUNCE"], ["older@example.org", "BOUNCE"]]
        csv.writer(fh).writerows(rows)
    cli("suppression", "import", str(csv_file))
    assert [e["address"] for e in as_json("suppression", "list")] == [
        "gone@example.org", "old@example.org", "older@example.org"
    ]  # fmt: skip
    assert as_json("suppression", "show", "gone@example.org")["suppressions"][0]["reason"] == "asked to stop"
    cli("suppression", "clear", "older@example.org")
    cli("class", "pause", "bulk", "--reason", "too many complaints")
    paused = {c["class"]: c["paused"] for c in as_json("class", "status")}
    assert paused == {"transactional": False, "list": False, "bulk": True}
    assert as_json("events", "list") == [] and as_json("notices", "list") == []
    assert as_json("feedback", "dead-letters") == [] and as_json("submission", "list") == []
    assert "sent" in json.dumps(as_json("stats"))
    assert not nowhere.exists()

    actions = [r["action"] for r in pg_rows(pg_url, "SELECT action FROM audit ORDER BY id")]
    assert actions == ["add", "import", "import", "clear", "pause"]
    assert [r["class"] for r in pg_rows(pg_url, "SELECT class FROM class_state WHERE paused")] == ["bulk"]


def test_state_check_reports_the_shared_state_and_fails_when_it_cannot_be_used(
    tmp_path: Path, pg_url: str, pg_empty_url: str
) -> None:
    env = {"SES_RELAY_STATE_URL": pg_url.replace("postgres@", f"postgres:{SECRET}@")}  # trust: ignored
    ok = run_cli("state", "check", data_dir=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "PostgreSQL (shared)" in ok.stdout and f"schema version: {len(MIGRATIONS)}" in ok.stdout
    assert ok.stdout.rstrip().endswith("ok") and SECRET not in ok.stdout
    found = json.loads(run_cli("state", "check", "--json", data_dir=tmp_path, env=env, check=True).stdout)
    assert (found["backend"], found["reachable"], found["ok"]) == ("postgresql", True, True)
    assert found["problems"] == []
    assert found["schema_version"] == found["expected_schema_version"] == len(MIGRATIONS)
    assert SECRET not in json.dumps(found) and "********" in found["where"]

    empty = run_cli("state", "check", data_dir=tmp_path, env={"SES_RELAY_STATE_URL": pg_empty_url})
    assert empty.returncode == 1 and "no ses-relay schema there yet" in empty.stdout

    gone = f"postgresql://relay:{SECRET}@127.0.0.1:{free_port()}/state"
    down = run_cli("state", "check", data_dir=tmp_path, env={"SES_RELAY_STATE_URL": gone})
    assert down.returncode == 1 and "reachable: no" in down.stdout
    assert SECRET not in down.stdout + down.stderr

    local = run_cli("state", "check", data_dir=tmp_path / "never")
    assert local.returncode == 1 and "local SQLite" in local.stdout and "no such file" in local.stdout


def test_serve_refuses_to_start_without_its_state_or_a_mirror_of_it_and_says_where_without_the_password(
    tmp_path: Path,
) -> None:
    gone = f"postgresql://relay:{SECRET}@127.0.0.1:{free_port()}/state"
    config = tmp_path / "ses-relay.toml"
    config.write_text(state_config(gone) + 'connect_timeout = "1s"\n')
    listen = f"127.0.0.1:{free_port()}"
    result = run_cli("serve", "--listen", listen, data_dir=tmp_path / "data", config=config)
    assert result.returncode == 1
    assert "cannot read the shared state" in result.stderr and "127.0.0.1" in result.stderr
    assert "no copy of its suppressions yet" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    bad = run_cli("suppression", "list", data_dir=tmp_path, env={"SES_RELAY_STATE_URL": "mysql://x@db/y"})
    assert bad.returncode == 2 and "state.url: not a PostgreSQL URL" in bad.stderr
