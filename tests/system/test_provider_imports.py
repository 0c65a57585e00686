"""`ses-relay suppression import` of other providers' exports, through the CLI as an admin runs it.

The sample files in tests/fixtures/providers/ follow each provider's documented format:
- SendGrid: the fields of its v3 suppression API, which its console's "Export CSV" of each
  list downloads (twilio.com/docs/sendgrid/ui/sending-email/bounces, "Export CSV";
  api-reference bounces/blocks: created, email, reason, status; spam reports: created,
  email, ip; global unsubscribes: created, email; `created` in Unix seconds);
- Mailgun: documentation.mailgun.com's bounces/complaints/unsubscribes import pages (the
  columns its CSV files carry: address, code, error / tags, created_at in RFC 2822 form);
- Postmark: postmarkapp.com/developer/api/suppressions-api, "Suppression dump" (its JSON,
  and a CSV with the same four fields: EmailAddress, SuppressionReason, Origin, CreatedAt);
- SES: the AWS CLI's `aws sesv2 list-suppressed-destinations` (JSON output,
  SuppressedDestinationSummaries with EmailAddress, Reason, LastUpdateTime; CLI v2's
  ISO 8601 times and, for one row, v1's Unix seconds).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.store import Store
from relay.suppression import Level
from tests.conftest import ROOT, cli_json, run_cli
from tests.support.relaydb import suppress

PROVIDERS = ROOT / "tests" / "fixtures" / "providers"


def listing(data_dir: Path) -> dict[str, tuple[str, str, str, str | None]]:
    entries = cli_json("suppression", "list", data_dir=data_dir)
    return {e["address"]: (e["class"], e["level"], e["cause"], e["expires_at"]) for e in entries}


def audit(data_dir: Path) -> list[tuple[str, str | None, str]]:
    async def go() -> list[tuple[str, str | None, str]]:
        store = await Store.open(data_dir / "relay.db")
        try:
            return [(a.action, a.address, a.detail) for a in await store.audit_log()]
        finally:
            await store.close()

    return asyncio.run(go())


# (file, what it is read as, {address: (class, level, cause, expires)}, bad lines, skipped lines)
CASES = [
    (
        "sendgrid_bounces.csv",
        "SendGrid bounces",
        {
            "gone@example.com": ("*", "hard", "bounce", None),
            "shouty.person@example.org": ("*", "hard", "bounce", None),
        },
        [5, 6],
        [4],  # 4.2.2: a temporary failure, long expired
    ),
    ("sendgrid_blocks.csv", "SendGrid blocks", {}, [], [2, 3]),
    (
        "sendgrid_spam_reports.csv",
        "SendGrid spam reports",
        {
            "angry@example.com": ("*", "permanent", "complaint", None),
            "furious@example.com": ("*", "permanent", "complaint", None),
        },
        [],
        [],
    ),
    (
        "sendgrid_unsubscribes.csv",
        "SendGrid unsubscribes",
        {"optout@example.com": ("*", "permanent", "unsubscribe", None)},
        [],
        [],
    ),
    (
        "mailgun_bounces.csv",
        "Mailgun bounces",
        {"nobody@example.net": ("*", "hard", "bounce", None)},
        [],
        [3],  # code 452
    ),
    (
        "mailgun_complaints.csv",
        "Mailgun complaints",
        {"spam-button@example.org": ("*", "permanent", "complaint", None)},
        [],
        [],
    ),
    (
        "mailgun_unsubscribes.csv",
        "Mailgun unsubscribes",
        {
            "everything@example.org": ("*", "permanent", "unsubscribe", None),
            "digest@example.org": ("list", "permanent", "unsubscribe", None),  # the tag names a class
            "promo@example.org": ("*", "permanent", "unsubscribe", None),  # a tag we cannot place
        },
        [],
        [],
    ),
    (
        "postmark_suppressions.csv",
        "Postmark suppressions",
        {
            "unsubscribed@example.com": ("*", "permanent", "unsubscribe", None),
            "bounce.address@example.com": ("*", "hard", "bounce", None),
            "spam.complaint.address@example.com": ("*", "permanent", "complaint", None),
            "blocked.by.us@example.com": ("*", "permanent", "manual", None),
        },
        [6],
        [],
    ),
    (
        "postmark_dump.json",
        "Postmark suppressions",
        {
            "unsubscribed@example.com": ("*", "permanent", "unsubscribe", None),
            "bounce.address@example.com": ("*", "hard", "bounce", None),
            "spam.complaint.address@example.com": ("*", "permanent", "complaint", None),
        },
        [],
        [],
    ),
    (
        "ses_suppressed_destinations.json",
        "SES account-level list",
        {
            "bounced@example.com": ("*", "hard", "bounce", None),
            "complained@example.org": ("*", "permanent", "complaint", None),
            "legacy@example.net": ("*", "hard", "bounce", None),
        },
        [13],  # the object that starts on line 13 has an unusable address
        [],
    ),
]


@pytest.mark.parametrize(("name", "title", "expected", "bad", "skipped"), CASES, ids=[c[0] for c in CASES])
def test_each_providers_export_is_recognised_and_mapped(
    tmp_path: Path,
    name: str,
    title: str,
    expected: dict[str, tuple[str, ...]],
    bad: list[int],
    skipped: list[int],
) -> None:
    data = tmp_path / "d"
    source = PROVIDERS / name
    done = run_cli("suppression", "import", str(source), data_dir=data)
    assert done.returncode == (1 if bad else 0), done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"{source}: read as {title}"
    reported = [int(line.split(": line ")[1].split(":")[0]) for line in lines if ": line " in line]
    assert reported == sorted(bad + skipped)
    assert all(line.endswith("skipped") for line in lines if any(f": line {n}:" in line for n in skipped))
    assert (
        f"imported {len(expected)} suppression(s); {len(bad)} bad row(s), {len(skipped)} expired row(s) "
        f"skipped; {len(expected)} new, 0 raised, 0 already covered"
    ) in done.stdout
    if expected:
        assert listing(data) == expected
        assert {address for _, address, _ in audit(data)} == set(expected)
        assert all(f"from {name}, {title}" in detail for *_, detail in audit(data))


def test_reasons_name_the_provider_and_its_words(tmp_path: Path) -> None:
    data = tmp_path / "d"
    run_cli("suppression", "import", str(PROVIDERS / "sendgrid_bounces.csv"), data_dir=data)
    run_cli("suppression", "import", str(PROVIDERS / "mailgun_unsubscribes.csv"), data_dir=data, check=True)
    shown = cli_json("suppression", "show", "gone@example.com", data_dir=data)["suppressions"][0]
    assert shown["reason"].startswith("imported from SendGrid bounces: 5.1.1: 550 5.1.1 The email account")
    assert shown["created_at"] == "2024-03-04T10:00:00.000000Z"  # SendGrid's time, not the import's
    promo = cli_json("suppression", "show", "promo@example.org", data_dir=data)["suppressions"][0]
    assert promo["reason"] == "imported from Mailgun unsubscribes: tag spring-sale"
    # An RCPT would be refused with the bounce code for the bounce, policy for the unsubscribe.
    text = run_cli("suppression", "show", "promo@example.org", data_dir=data, check=True).stdout
    assert "cause:    unsubscribe: imported from Mailgun unsubscribes" in text


def test_dry_run_prints_each_row_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "d"
    source = PROVIDERS / "postmark_suppressions.csv"
    dry = run_cli("suppression", "import", str(source), "--dry-run", data_dir=data)
    assert dry.returncode == 1  # line 6 is bad
    assert dry.stdout.splitlines() == [
        "line 2: unsubscribed@example.com: class *, permanent unsubscribe, never expires: new",
        "line 3: bounce.address@example.com: class *, hard bounce, never expires: new",
        "line 4: spam.complaint.address@example.com: class *, permanent complaint, never expires: new",
        "line 5: blocked.by.us@example.com: class *, permanent manual, never expires: new",
        "would import 4 suppression(s); 1 bad row(s), 0 expired row(s) skipped; "
        "4 new, 0 would raise, 0 already covered",
    ]
    assert "line 6: SuppressionReason: 'Bounced' is not one of HardBounce" in dry.stderr
    assert not data.exists()  # a dry run creates nothing


def test_dry_run_tells_new_from_raised_from_covered(tmp_path: Path) -> None:
    data = tmp_path / "d"
    suppress(data, "gone@example.com", level=Level.SOFT, days=0.5, reason="Transient/MailboxFull")
    suppress(data, "shouty.person@example.org")  # hard, all classes, never expires: covers the row
    before = audit(data)
    source = PROVIDERS / "sendgrid_bounces.csv"
    dry = run_cli("suppression", "import", str(source), "--dry-run", data_dir=data)
    assert dry.stdout.splitlines()[:2] == [
        "line 2: gone@example.com: class *, hard bounce, never expires: would raise",
        "line 3: shouty.person@example.org: class *, hard bounce, never expires: already covered",
    ]
    summary = dry.stdout.splitlines()[-1]
    assert summary == (
        "would import 1 suppression(s); 2 bad row(s), 1 expired row(s) skipped; "
        "0 new, 1 would raise, 1 already covered"
    )
    assert listing(data)["gone@example.com"][1] == "soft"  # unchanged
    assert audit(data) == before


def test_importing_the_same_file_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    data = tmp_path / "d"
    names = ("sendgrid_spam_reports.csv", "postmark_dump.json", "ses_suppressed_destinations.json")
    files = [PROVIDERS / n for n in names]
    for source in files:
        run_cli("suppression", "import", str(source), data_dir=data)
    first_list, first_audit = cli_json("suppression", "list", data_dir=data), audit(data)
    assert len(first_audit) == len(first_list) == 2 + 3 + 3

    for source in files:
        again = run_cli("suppression", "import", str(source), data_dir=data)
        assert "imported 0 suppression(s);" in again.stdout
        assert " 0 new, 0 raised, " in again.stdout
    assert "3 already covered" in again.stdout
    assert cli_json("suppression", "list", data_dir=data) == first_list  # updated_at included
    assert audit(data) == first_audit  # not one audit row for an unchanged entry


def test_a_row_repeated_in_one_file_is_imported_once(tmp_path: Path) -> None:
    data = tmp_path / "d"
    source = tmp_path / "unsubscribes.csv"
    source.write_text("email,created\nTwice@example.com,1709546400\ntwice@example.com,1709546400\n")
    done = run_cli("suppression", "import", str(source), data_dir=data, check=True)
    assert done.stdout.splitlines() == [
        "imported 1 suppression(s); 0 bad row(s), 0 expired row(s) skipped; "
        "1 new, 0 raised, 1 already covered"
    ]
    assert len(audit(data)) == 1


def test_class_applies_to_complaints_and_unsubscribes_never_to_bounces(tmp_path: Path) -> None:
    data = tmp_path / "d"
    for name in ("postmark_dump.json", "mailgun_unsubscribes.csv"):
        run_cli("suppression", "import", str(PROVIDERS / name), "--class", "bulk", data_dir=data, check=True)
    got = {a: v[0] for a, v in listing(data).items()}
    assert got == {
        "bounce.address@example.com": "*",  # a bounce describes the mailbox: every class
        "unsubscribed@example.com": "bulk",
        "spam.complaint.address@example.com": "bulk",
        "everything@example.org": "bulk",
        "digest@example.org": "list",  # its own tag names a class
        "promo@example.org": "bulk",
    }


def test_format_names_the_list_when_the_header_cannot(tmp_path: Path) -> None:
    data = tmp_path / "d"
    exported = tmp_path / "export.csv"  # SendGrid blocks under a name that does not say so
    exported.write_text((PROVIDERS / "sendgrid_blocks.csv").read_text())
    guessed = run_cli("suppression", "import", str(exported), "--dry-run", data_dir=data, check=True)
    assert "read as SendGrid bounces" in guessed.stderr and "same columns" in guessed.stderr
    assert "would import 1 suppression(s)" in guessed.stdout  # the 5.7.1 block, taken as a bounce

    told = run_cli(
        "suppression", "import", str(exported), "--format", "sendgrid-blocks", "--dry-run",
        data_dir=data, check=True,
    )  # fmt: skip
    assert "read as SendGrid blocks" in told.stderr and "same columns" not in told.stderr
    assert "would import 0 suppression(s); 0 bad row(s), 2 expired row(s) skipped" in told.stdout

    wrong = run_cli("suppression", "import", str(exported), "--format", "mailgun-bounces", data_dir=data)
    assert wrong.returncode == 2
    assert "not a Mailgun bounces header (its columns: address, code, error, created_at)" in wrong.stderr
    json_as_csv = run_cli(
        "suppression", "import", str(PROVIDERS / "postmark_dump.json"), "--format", "sendgrid-unsubscribes",
        data_dir=data,
    )  # fmt: skip
    assert json_as_csv.returncode == 2 and "exports are CSV" in json_as_csv.stderr
    assert not data.exists()


def test_unknown_files_are_refused_whole(tmp_path: Path) -> None:
    data = tmp_path / "d"
    odd = tmp_path / "odd.csv"
    odd.write_text("email,created,colour\na@example.com,1709546400,blue\n")
    done = run_cli("suppression", "import", str(odd), data_dir=data)
    assert done.returncode == 2
    assert "unknown column 'created'" in done.stderr
    assert "nor is it an export of SendGrid, Mailgun, Postmark or SES" in done.stderr
    other_json = tmp_path / "other.json"
    other_json.write_text('{"items": []}')
    done = run_cli("suppression", "import", str(other_json), data_dir=data)
    assert done.returncode == 2 and "'SuppressedDestinationSummaries'" in done.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"Suppressions": [\n{"EmailAddress": "a@example.com",\n')
    done = run_cli("suppression", "import", str(broken), data_dir=data)
    assert done.returncode == 2 and "not JSON" in done.stderr
    assert not data.exists()
