"""`suppression sync-ses --pull|--push` against SESv2's account-level suppression list.

moto 5.2 has no SESv2 suppression list (404), so the CLI talks to SesV2Gaps: a local
HTTP server answering those operations in SESv2's wire format, forwarding the rest to
moto. boto3 in the CLI process signs and pages exactly as it would against AWS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from relay.store import Store
from relay.suppression import Cause, Level
from tests.conftest import cli_json, run_cli
from tests.support.relaydb import suppress
from tests.support.sesv2_gaps import SesV2Gaps


@pytest.fixture
def aws(moto_server: str) -> Iterator[SesV2Gaps]:
    with SesV2Gaps(moto_server) as gaps:
        yield gaps


def config_for(tmp_path: Path, endpoint: str) -> Path:
    path = tmp_path / "ses-relay.toml"
    path.write_text(f'[ses]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\n')
    return path


def listing(data_dir: Path) -> dict[tuple[str, str], dict[str, object]]:
    return {(e["address"], e["class"]): e for e in cli_json("suppression", "list", data_dir=data_dir)}


def test_pull_adds_sess_list_as_all_class_entries(tmp_path: Path, aws: SesV2Gaps) -> None:
    data, config = tmp_path / "d", config_for(tmp_path, aws.url)
    sesv2 = boto3.client("sesv2", region_name="us-east-1", endpoint_url=aws.url)
    for address, reason in [
        ("gone@example.com", "BOUNCE"),
        ("Shouty@Example.COM", "BOUNCE"),
        ("angry@example.org", "COMPLAINT"),
        ("known@example.net", "BOUNCE"),
        ("x@-bad-.example", "BOUNCE"),
    ]:
        sesv2.put_suppressed_destination(EmailAddress=address, Reason=reason)
    aws.page_limit = 2  # three pages: the CLI must follow NextToken
    suppress(data, "known@example.net", level=Level.SOFT, days=0.1, reason="Transient/MailboxFull")

    dry = run_cli("suppression", "sync-ses", "--pull", "--dry-run", data_dir=data, config=config, check=True)
    assert "would add 3 new, 1 already suppressed here, 1 unusable" in dry.stdout
    assert set(listing(data)) == {("known@example.net", "*")}

    done = run_cli("suppression", "sync-ses", "--pull", data_dir=data, config=config, check=True)
    assert "SES lists 5 address(es): added 3 new, 1 already suppressed here, 1 unusable" in done.stdout
    assert "'x@-bad-.example'" in done.stderr
    assert aws.calls.count(("GET", "/v2/email/suppression/addresses")) == 6  # 3 pages, twice
    got = {key: (e["level"], e["cause"], e["expires_at"]) for key, e in listing(data).items()}
    assert got == {
        ("gone@example.com", "*"): ("hard", "bounce", None),
        ("shouty@example.com", "*"): ("hard", "bounce", None),
        ("angry@example.org", "*"): ("permanent", "complaint", None),
        # SES keeps it until removed, so the soft bounce here becomes hard and stops expiring.
        ("known@example.net", "*"): ("hard", "bounce", None),
    }

    again = run_cli("suppression", "sync-ses", "--pull", data_dir=data, config=config, check=True)
    assert "added 0 new, 4 already suppressed here" in again.stdout
    assert {k: (e["level"], e["cause"]) for k, e in listing(data).items()} == {
        k: v[:2] for k, v in got.items()
    }

    async def audit() -> list[str]:
        store = await Store.open(data / "relay.db")
        try:
            return [a.action for a in await store.audit_log() if a.actor.startswith("cli")]
        finally:
            await store.close()

    assert asyncio.run(audit()) == ["sync-ses-pull"] * 8


def test_push_puts_only_never_expiring_all_class_bounces_and_complaints(
    tmp_path: Path, aws: SesV2Gaps
) -> None:
    data, config = tmp_path / "d", config_for(tmp_path, aws.url)
    suppress(data, "hard@example.com")  # bounce, *, never -> BOUNCE
    suppress(data, "complained@example.com", cause=Cause.COMPLAINT, level=Level.PERMANENT)  # -> COMPLAINT
    suppress(data, "soft@example.com", level=Level.SOFT, days=1)  # expires here: not pushed
    suppress(data, "bulk-only@example.com", klass="bulk", cause=Cause.COMPLAINT, level=Level.PERMANENT)
    suppress(data, "there@example.com")  # SES has it already
    run_cli("suppression", "add", "blocked@example.com", data_dir=data, check=True)  # manual: not pushed
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=aws.url).put_suppressed_destination(
        EmailAddress="There@example.com", Reason="COMPLAINT"
    )

    dry = run_cli("suppression", "sync-ses", "--push", "--dry-run", data_dir=data, config=config, check=True)
    assert "would put 2 address(es) on SES's list; 1 already there, 1 skipped" in dry.stdout
    assert set(aws.suppressed) == {"There@example.com"}

    done = run_cli("suppression", "sync-ses", "--push", data_dir=data, config=config, check=True)
    assert "put 2 address(es) on SES's list; 1 already there, 1 skipped because they expire" in done.stdout
    assert {a: r for a, (r, _) in aws.suppressed.items()} == {
        "There@example.com": "COMPLAINT",
        "hard@example.com": "BOUNCE",
        "complained@example.com": "COMPLAINT",
    }
    again = run_cli("suppression", "sync-ses", "--push", data_dir=data, config=config, check=True)
    assert "put 0 address(es) on SES's list; 3 already there" in again.stdout
    assert aws.calls.count(("PUT", "/v2/email/suppression/addresses")) == 3  # 1 seed + 2 pushed


def test_a_direction_is_required(tmp_path: Path, aws: SesV2Gaps) -> None:
    done = run_cli("suppression", "sync-ses", data_dir=tmp_path / "d", config=config_for(tmp_path, aws.url))
    assert done.returncode == 2
    assert "--pull, --push or --report" in done.stderr


def test_plain_moto_lacks_the_operation_and_the_error_says_so(tmp_path: Path, moto_server: str) -> None:
    done = run_cli(
        "suppression", "sync-ses", "--pull", data_dir=tmp_path / "d", config=config_for(tmp_path, moto_server)
    )
    assert done.returncode == 1
    assert "SES ListSuppressedDestinations failed: 404" in done.stderr


# -- the reconciliation report ---------------------------------------------------------------


def test_report_lists_each_sides_own_addresses_case_insensitively_and_changes_nothing(
    tmp_path: Path, aws: SesV2Gaps
) -> None:
    data, config = tmp_path / "d", config_for(tmp_path, aws.url)
    suppress(data, "hard@example.com", reason="Permanent/General: 550 5.1.1 user unknown")  # pushable
    suppress(data, "soft@example.com", level=Level.SOFT, days=1, reason="Transient/MailboxFull")
    suppress(data, "bulk-only@example.com", klass="bulk", cause=Cause.COMPLAINT, level=Level.PERMANENT)
    suppress(data, "both@example.com")
    suppress(data, "gone@example.com", days=-1)  # expired: not on our list any more
    at = datetime(2025, 4, 1, 9, 30, tzinfo=UTC)
    aws.suppressed.update(
        {
            "Both@Example.COM": ("BOUNCE", at),
            "OnlySes@Example.org": ("COMPLAINT", at + timedelta(days=1)),
            "gone@example.com": ("BOUNCE", at + timedelta(days=2)),
        }
    )
    before_list, before_ses = listing(data), dict(aws.suppressed)

    text = run_cli("suppression", "sync-ses", "--report", data_dir=data, config=config, check=True).stdout
    lines = text.splitlines()
    assert lines[0] == "here: 4 address(es) suppressed; SES's account-level list: 3; on both: 1"
    assert lines[1] == "only here (3):"
    assert lines[2] == "  bulk-only@example.com"
    assert lines[3].startswith("    class bulk: permanent complaint since 20")
    assert lines[3].endswith(", never expires: Permanent/General: smtp; 550 5.1.1 user unknown")
    assert lines[4] == "  hard@example.com  (--push would add it)"
    assert lines[5].startswith("    all classes: hard bounce since ")
    assert lines[6] == "  soft@example.com"
    assert lines[7].startswith("    all classes: soft bounce since ") and ", expires 20" in lines[7]
    assert lines[8:] == [
        "only at SES (2):",
        "  gone@example.com: BOUNCE since 2025-04-03T09:30:00.000000Z",
        "  OnlySes@Example.org: COMPLAINT since 2025-04-02T09:30:00.000000Z",
    ]

    report = cli_json("suppression", "sync-ses", "--report", data_dir=data, config=config)
    assert (report["here"], report["at_ses"], report["on_both"]) == (4, 3, 1)
    assert [r["address"] for r in report["only_here"]] == [
        "bulk-only@example.com", "hard@example.com", "soft@example.com",
    ]  # fmt: skip
    [bulk] = report["only_here"][0]["suppressions"]
    assert (bulk["class"], bulk["level"], bulk["cause"], bulk["expires_at"]) == (
        "bulk", "permanent", "complaint", None,
    )  # fmt: skip
    assert [r["pushable"] for r in report["only_here"]] == [False, True, False]
    assert report["only_here"][2]["suppressions"][0]["expires_at"] is not None
    assert report["only_at_ses"] == [
        {
            "address": "gone@example.com",
            "ses_address": "gone@example.com",
            "reason": "BOUNCE",
            "last_update_time": "2025-04-03T09:30:00.000000Z",
        },
        {
            "address": "onlyses@example.org",
            "ses_address": "OnlySes@Example.org",
            "reason": "COMPLAINT",
            "last_update_time": "2025-04-02T09:30:00.000000Z",
        },
    ]
    assert listing(data) == before_list and aws.suppressed == before_ses  # a report changes nothing
    assert ("PUT", "/v2/email/suppression/addresses") not in aws.calls


def test_report_needs_the_store_and_json_needs_the_report(tmp_path: Path, aws: SesV2Gaps) -> None:
    config = config_for(tmp_path, aws.url)
    missing = run_cli("suppression", "sync-ses", "--report", data_dir=tmp_path / "none", config=config)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "none").exists()
    stray = run_cli("suppression", "sync-ses", "--pull", "--json", data_dir=tmp_path / "d", config=config)
    assert stray.returncode == 2 and "--json goes with --report" in stray.stderr
