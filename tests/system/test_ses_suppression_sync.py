"""`suppression sync-ses --pull|--push` against SESv2's account-level suppression list.

moto 5.2 has no SESv2 suppression list (404), so the CLI talks to SesV2Gaps: a local
HTTP server answering those operations in SESv2's wire format, forwarding the rest to
moto. boto3 in the CLI process signs and pages exactly as it would against AWS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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
    assert "--pull or --push" in done.stderr


def test_plain_moto_lacks_the_operation_and_the_error_says_so(tmp_path: Path, moto_server: str) -> None:
    done = run_cli(
        "suppression", "sync-ses", "--pull", data_dir=tmp_path / "d", config=config_for(tmp_path, moto_server)
    )
    assert done.returncode == 1
    assert "SES ListSuppressedDestinations failed: 404" in done.stderr
