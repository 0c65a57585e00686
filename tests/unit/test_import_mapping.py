"""The pure side of imports: header recognition, provider times, README's mapping table row
by row, and the plan (new / raise / covered) that makes a second import change nothing.

Header rows follow the providers' documented exports, as tests/system/test_provider_imports.py
says for its fixture files (SendGrid's v3 suppression API fields, Mailgun's import/export
columns, Postmark's suppression dump, the AWS CLI's list-suppressed-destinations).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.ops.import_plan import Outcome, covers, describe, plan, to_write
from relay.ops.provider_imports import (
    BY_NAME,
    FORMAT_NAMES,
    Options,
    RowError,
    detect,
    parse_time,
    read_import,
    to_entry,
)
from relay.ops.suppression_csv import CsvFormatError
from relay.suppression import ALL, Cause, Level
from tests.support.entries import NOW, suppression

CLASSES = ("transactional", "list", "bulk")
OPTS = Options(NOW, CLASSES, ALL, timedelta(hours=1))

# -- recognising a file by its header row ---------------------------------------------------

HEADERS = [
    ("email,created,reason,status", "", "sendgrid-bounces"),
    ("Email,Created,Reason,Status", "bounces.csv", "sendgrid-bounces"),
    ("email,created,reason,status", "sendgrid-blocks-2024.csv", "sendgrid-blocks"),
    ("email,created,reason", "", "sendgrid-invalid-emails"),
    ("email,created,ip", "", "sendgrid-spam-reports"),
    ("created,email", "", "sendgrid-unsubscribes"),
    ("Email,Created At", "", "sendgrid-unsubscribes"),
    ("address,code,error,created_at", "", "mailgun-bounces"),
    ("address,created_at", "", "mailgun-complaints"),
    ("address,tags,created_at", "", "mailgun-unsubscribes"),
    ("EmailAddress,SuppressionReason,Origin,CreatedAt", "", "postmark"),
    ("EmailAddress,SuppressionReason", "", "postmark"),
    ("EmailAddress,Reason,LastUpdateTime", "", "ses-json"),
    ("email,reason", "", None),  # ses-relay's own / SES's email,reason
    ("email,reason,class,expires_at", "", None),
    ("address", "", None),
    ("email,created,status", "", None),
    ("email,created,reason,status,colour", "", None),
]


@pytest.mark.parametrize(("header", "filename", "name"), HEADERS)
def test_detect(header: str, filename: str, name: str | None) -> None:
    fmt, note = detect(header.split(","), filename)
    assert (fmt.name if fmt else None) == name
    assert (note is not None) is (name is not None and name.startswith("sendgrid-b"))


def test_every_format_has_a_name_the_cli_offers() -> None:
    assert FORMAT_NAMES[:2] == ("auto", "ses-relay") and set(FORMAT_NAMES[2:]) == set(BY_NAME)


# -- times --------------------------------------------------------------------------------

TIMES = [
    ("1709546400", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
    ("1707728400.5", datetime(2024, 2, 12, 9, 0, 0, 500000, tzinfo=UTC)),
    ("2019-12-17T08:58:33-05:00", datetime(2019, 12, 17, 13, 58, 33, tzinfo=UTC)),
    ("2024-02-10T14:21:05.123000+00:00", datetime(2024, 2, 10, 14, 21, 5, 123000, tzinfo=UTC)),
    ("2024-03-04 10:00:00", datetime(2024, 3, 4, 10, 0, tzinfo=UTC)),
    ("Thu, 07 Mar 2024 10:00:00 UTC", datetime(2024, 3, 7, 10, 0, tzinfo=UTC)),
    ("Thu, 07 Mar 2024 10:00:00 -0000", datetime(2024, 3, 7, 10, 0, tzinfo=UTC)),
    ("Thu, 07 Mar 2024 12:00:00 +0200", datetime(2024, 3, 7, 10, 0, tzinfo=UTC)),
    ("", None),
]


@pytest.mark.parametrize(("text", "when"), TIMES)
def test_parse_time(text: str, when: datetime | None) -> None:
    assert parse_time(text) == when


@pytest.mark.parametrize("text", ["yesterday", "12", "2024-13-01", "Thu, 99 Foo 2024"])
def test_bad_times(text: str) -> None:
    with pytest.raises(RowError, match="is not a date"):
        parse_time(text)


# -- README's mapping table, row by row ----------------------------------------------------

OLD = "1709546400"  # 2024-03-04T10:00Z, long before NOW
RECENT = str(int((NOW - timedelta(minutes=20)).timestamp()))
# (format, row, --class, (class, level, cause, expires after the row's time or None); None: skipped)
HARD, PERM, SOFT = Level.HARD, Level.PERMANENT, Level.SOFT
BOUNCE, COMPLAINT, UNSUB, MANUAL = Cause.BOUNCE, Cause.COMPLAINT, Cause.UNSUBSCRIBE, Cause.MANUAL
HOUR = timedelta(hours=1)
MAPPING = [
    ("sendgrid-bounces", {"status": "5.1.1", "reason": "550 no user"}, "bulk", (ALL, HARD, BOUNCE, None)),
    ("sendgrid-bounces", {"status": "", "reason": "550 mailbox unavailable"}, ALL, (ALL, HARD, BOUNCE, None)),
    ("sendgrid-bounces", {"status": "4.2.2", "created": RECENT}, ALL, (ALL, SOFT, BOUNCE, HOUR)),
    ("sendgrid-bounces", {"status": "4.2.2", "reason": "over quota"}, ALL, None),  # old: expired
    ("sendgrid-blocks", {"status": "5.7.1", "created": RECENT}, ALL, (ALL, SOFT, BOUNCE, HOUR)),
    ("sendgrid-blocks", {"status": "5.7.1", "reason": "blocked using spamhaus"}, ALL, None),
    ("sendgrid-invalid-emails", {"reason": "Mail domain is unknown"}, "list", (ALL, HARD, BOUNCE, None)),
    ("sendgrid-spam-reports", {"ip": "192.0.2.1"}, "list", ("list", PERM, COMPLAINT, None)),
    ("sendgrid-unsubscribes", {}, ALL, (ALL, PERM, UNSUB, None)),
    ("mailgun-bounces", {"code": "550", "error": "No such mailbox"}, "bulk", (ALL, HARD, BOUNCE, None)),
    ("mailgun-bounces", {"code": "421", "error": "try later"}, ALL, None),
    ("mailgun-complaints", {}, "bulk", ("bulk", PERM, COMPLAINT, None)),
    ("mailgun-unsubscribes", {"tags": "*"}, "bulk", ("bulk", PERM, UNSUB, None)),
    ("mailgun-unsubscribes", {"tags": '["list"]'}, ALL, ("list", PERM, UNSUB, None)),
    ("mailgun-unsubscribes", {"tags": "newsletter"}, "bulk", ("bulk", PERM, UNSUB, None)),
    ("postmark", {"reason": "HardBounce", "origin": "Recipient"}, "list", (ALL, HARD, BOUNCE, None)),
    ("postmark", {"reason": "SpamComplaint", "origin": "Recipient"}, "list", ("list", PERM, COMPLAINT, None)),
    ("postmark", {"reason": "ManualSuppression", "origin": "Recipient"}, ALL, (ALL, PERM, UNSUB, None)),
    ("postmark", {"reason": "ManualSuppression", "origin": "Customer"}, ALL, (ALL, PERM, MANUAL, None)),
    ("postmark", {"reason": "ManualSuppression", "origin": "Admin"}, ALL, (ALL, PERM, MANUAL, None)),
    ("ses-json", {"reason": "BOUNCE"}, "list", (ALL, HARD, BOUNCE, None)),
    ("ses-json", {"reason": "COMPLAINT"}, "list", ("list", PERM, COMPLAINT, None)),
]


@pytest.mark.parametrize(("fmt", "row", "klass", "expected"), MAPPING)
def test_mapping_table(
    fmt: str, row: dict[str, str], klass: str, expected: tuple[str, Level, Cause, timedelta | None] | None
) -> None:
    values = {"email": "Someone@Example.com", "created": OLD, **row}
    outcome = to_entry(BY_NAME[fmt], values, Options(NOW, CLASSES, klass, timedelta(hours=1)))
    if expected is None:
        assert not hasattr(outcome, "address") and "expired" in outcome.message
        return
    assert hasattr(outcome, "address"), outcome
    when = parse_time(values["created"])
    assert when is not None
    lasts = expected[3]
    assert (outcome.klass, outcome.level, outcome.cause) == expected[:3]
    assert outcome.expires_at == (None if lasts is None else when + lasts)
    assert outcome.address == "someone@example.com"
    assert outcome.created_at == when and outcome.updated_at == NOW
    assert outcome.reason.startswith("imported from ")


@pytest.mark.parametrize(
    ("fmt", "row", "message"),
    [
        ("postmark", {"email": "a@x.example", "reason": "Bounced"}, "SuppressionReason: 'Bounced'"),
        ("ses-json", {"email": "a@x.example", "reason": "SPAM"}, "Reason: 'SPAM' is not BOUNCE or COMPLAINT"),
        ("mailgun-complaints", {"email": "nobody"}, "address: "),
        ("sendgrid-unsubscribes", {"email": "a@x.example", "created": "soon"}, "created: 'soon' is not a"),
        ("postmark", {"email": "a@x.example", "reason": "HardBounce", "created": "x"}, "CreatedAt: 'x'"),
    ],
)
def test_bad_rows_name_the_providers_column(fmt: str, row: dict[str, str], message: str) -> None:
    with pytest.raises(RowError, match=message):
        to_entry(BY_NAME[fmt], row, OPTS)


def test_a_temporary_failure_without_a_time_is_skipped_and_times_in_the_future_are_now() -> None:
    skipped = to_entry(BY_NAME["mailgun-bounces"], {"email": "a@example.com", "code": "452"}, OPTS)
    assert "without a time" in getattr(skipped, "message", "")
    future = str(int((NOW + timedelta(days=2)).timestamp()))
    entry = to_entry(BY_NAME["sendgrid-unsubscribes"], {"email": "a@example.com", "created": future}, OPTS)
    assert getattr(entry, "created_at", None) == NOW  # a provider's clock ahead of ours


def test_read_import_keeps_line_numbers_of_csv_and_json() -> None:
    csv_text = 'email,created\n\n"multi\nline@example.com",1709546400\nok@example.com,1709546400,extra\n'
    read = read_import(csv_text, opts=OPTS)
    assert read.source == "SendGrid unsubscribes"
    problems = [(p.line, p.message.split(":")[0]) for p in read.parsed.errors]
    assert problems == [(4, "email"), (5, "3 columns, at most 2 expected")]
    json_text = (
        '{"Suppressions": [\n {"EmailAddress": "a@example.com", "SuppressionReason": "HardBounce"},\n 7,\n'
        ' {"EmailAddress": "b@example.com", "SuppressionReason": "SpamComplaint", "MessageStream": "x"}\n]}'
    )
    read = read_import(json_text, opts=OPTS)
    assert read.parsed.lines == [2, 4] and [p.line for p in read.parsed.errors] == [3]
    decoy = (
        '{"Meta": {"Suppressions": [1]},\n "Suppressions": [\n'
        '  {"EmailAddress": "x", "SuppressionReason": "HardBounce"}]}'
    )
    read = read_import(decoy, opts=OPTS)
    assert [p.line for p in read.parsed.errors] == [3]  # the top-level list's line, not the nested one's
    own = read_import("a@example.com,BOUNCE\n", opts=OPTS)
    assert own.source == "ses-relay CSV" and len(own.parsed.entries) == 1
    with pytest.raises(CsvFormatError, match="unknown format"):
        read_import("", fmt_name="hotmail", opts=OPTS)


# -- the plan ---------------------------------------------------------------------------

s = suppression
NEVER = None
LATER = NOW + timedelta(days=3)


@pytest.mark.parametrize(
    ("held", "new", "covered"),
    [
        (s("a@x.example"), s("a@x.example"), True),
        (s("a@x.example", level=Level.PERMANENT), s("a@x.example"), True),
        (s("a@x.example", level=Level.SOFT), s("a@x.example"), False),
        (s("a@x.example", expires_at=LATER), s("a@x.example", expires_at=NEVER), False),
        (s("a@x.example", expires_at=LATER), s("a@x.example", expires_at=LATER - timedelta(hours=1)), True),
        (s("a@x.example", expires_at=NOW - timedelta(seconds=1)), s("a@x.example"), False),  # expired
    ],
)
def test_covers(held, new, covered: bool) -> None:  # type: ignore[no-untyped-def]
    assert covers(held, new, NOW) is covered


def test_plan_sorts_rows_into_new_raise_and_covered() -> None:
    on_file = {
        "soft@x.example": [s("soft@x.example", level=Level.SOFT, expires_at=NOW + timedelta(hours=1))],
        "hard@x.example": [s("hard@x.example")],
        "old@x.example": [s("old@x.example", expires_at=NOW - timedelta(days=1))],
    }
    entries = [
        s("soft@x.example"),  # raises the soft entry
        s("hard@x.example", klass="list", cause=Cause.UNSUBSCRIBE),  # the * entry is as strong: covered
        s("hard@x.example", klass="list", cause=Cause.COMPLAINT, level=Level.PERMANENT),  # stronger: new
        s("old@x.example"),  # the entry on file expired: new
        s("fresh@x.example"),
        s("fresh@x.example"),  # the same row again in the file: covered by the one before
    ]
    rows = plan(entries, [2, 3, 4, 5, 6, 7], on_file, NOW)
    assert [r.outcome for r in rows] == [
        Outcome.RAISE, Outcome.COVERED, Outcome.NEW, Outcome.NEW, Outcome.NEW, Outcome.COVERED,
    ]  # fmt: skip
    assert to_write(rows) == [entries[i] for i in (0, 2, 3, 4)]
    assert describe(rows[0], dry_run=True) == (
        "line 2: soft@x.example: class *, hard bounce, never expires: would raise"
    )
    assert describe(rows[0], dry_run=False).endswith(": raised")
    covered = describe(rows[1], dry_run=True)
    assert covered.endswith("class list, hard unsubscribe, never expires: already covered")
