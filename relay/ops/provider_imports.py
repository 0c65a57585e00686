"""Other providers' suppression exports, recognised by their header rows and mapped to ours (pure).

Moving onto ses-relay from SendGrid, Mailgun or Postmark (or from SES's own
account-level list) means bringing the addresses they learnt not to mail. Each
provider exports its lists in its own shape; this module reads them:

- SendGrid's CSV exports of bounces, blocks, invalid emails, spam reports and (global)
  unsubscribes (the columns of its v3 suppression API: email, created, reason, status, ip);
- Mailgun's bounces, complaints and unsubscribes (address, code, error, tags, created_at,
  created_at in RFC 2822 form, as its import/export documentation has them);
- Postmark's suppressions (EmailAddress, SuppressionReason, Origin, CreatedAt), as CSV or
  as the JSON of its suppression dump (`{"Suppressions": [...]}`);
- SES's `aws sesv2 list-suppressed-destinations` JSON (`SuppressedDestinationSummaries`
  with EmailAddress, Reason, LastUpdateTime).

`MAPPING` is the table README documents: each provider's reason becomes our cause,
level and class. Bounces describe the mailbox, so they are all-class entries whatever
`--class` says; complaints, unsubscribes and manual blocks take the import's class
(default `*`), as the policy places them in the message's class when it is known. A
provider keeps what it suppressed until someone removes it, so the imported entries
never expire, except temporary failures (a 4xx code, SendGrid's blocks), which last
`[policy] soft_bounce_expiry` from when the provider recorded them and so are
normally skipped as already expired. Every time comes from the file, never from the
clock, so importing the same file twice yields the same entries (see import_plan).

Anything else falls through to relay.ops.suppression_csv (ses-relay's own CSV and
SES's `email,reason`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from relay.addresses import AddressError, normalise
from relay.ops.suppression_csv import CsvFormatError, ParsedImport, RowProblem, parse_csv
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import to_text

REASON_LIMIT = 300  # reasons are echoed in SMTP replies: one bounded line
OWN = "ses-relay"  # ses-relay's own CSV, or SES's email,reason
Row = Mapping[str, str]


@dataclass(frozen=True)
class Mapped:
    """What one provider row means here (before address, class and times are filled in)."""

    cause: Cause
    level: Level
    mailbox: bool  # a bounce: all classes, whatever --class says
    temporary: bool = False  # lasts soft_bounce_expiry from the provider's time
    detail: str = ""
    klass: str | None = None  # a class the row itself names (else the import's class)


class RowError(ValueError):
    """A row that cannot be imported; the message names the column."""


@dataclass(frozen=True)
class Format:
    name: str  # what --format takes
    title: str  # how reports name it
    fields: Mapping[str, tuple[str, ...]]  # our field -> accepted header names (the documented one first)
    required: frozenset[str]
    map_row: Callable[[Row, Collection[str]], Mapped]
    json_key: str | None = None  # the list a JSON export keeps its rows in


def _norm(name: str) -> str:
    """Header names compare without case, spaces or punctuation: `Created At` is `createdat`."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_SMTP_CODE = re.compile(r"(?<![\d.])([245])(?:\d\d(?![\d.])|\.\d{1,3}\.\d{1,3})")


def _temporary(*texts: str) -> bool:
    """A 4xx reply or 4.x.x status is a temporary failure; the first code found decides."""
    for text in texts:
        found = _SMTP_CODE.search(text or "")
        if found:
            return found.group(1) == "4"
    return False


def _text(*parts: str) -> str:
    return ": ".join(p.strip() for p in parts if p and p.strip())


# -- one mapping function per list ----------------------------------------------------------


def _sendgrid_bounce(row: Row, classes: Collection[str]) -> Mapped:
    temporary = _temporary(row.get("status", ""), row.get("reason", ""))
    level = Level.SOFT if temporary else Level.HARD
    return Mapped(Cause.BOUNCE, level, True, temporary, _text(row.get("status", ""), row.get("reason", "")))


def _sendgrid_block(row: Row, classes: Collection[str]) -> Mapped:
    # A block is the receiving server refusing the sender's IP or the content, not the
    # mailbox: at most a transient bounce under our policy.
    return Mapped(Cause.BOUNCE, Level.SOFT, True, True, _text(row.get("status", ""), row.get("reason", "")))


def _sendgrid_invalid(row: Row, classes: Collection[str]) -> Mapped:
    return Mapped(Cause.BOUNCE, Level.HARD, True, False, row.get("reason", ""))


def _complaint(row: Row, classes: Collection[str]) -> Mapped:
    return Mapped(Cause.COMPLAINT, Level.PERMANENT, False)


def _unsubscribe(row: Row, classes: Collection[str]) -> Mapped:
    return Mapped(Cause.UNSUBSCRIBE, Level.PERMANENT, False)


def _mailgun_bounce(row: Row, classes: Collection[str]) -> Mapped:
    temporary = _temporary(row.get("code", ""), row.get("error", ""))
    level = Level.SOFT if temporary else Level.HARD
    return Mapped(Cause.BOUNCE, level, True, temporary, _text(row.get("code", ""), row.get("error", "")))


def _mailgun_unsubscribe(row: Row, classes: Collection[str]) -> Mapped:
    """Tag `*` (or none) is every mail of the domain; a tag that names one of our classes
    is that class; any other tag cannot be told apart here, so the import's class holds."""
    tags = row.get("tags", "").strip().strip("[]").replace('"', "").replace("'", "").strip()
    if tags in ("", "*"):
        return Mapped(Cause.UNSUBSCRIBE, Level.PERMANENT, False)
    klass = tags if tags in classes else None
    return Mapped(Cause.UNSUBSCRIBE, Level.PERMANENT, False, detail=f"tag {tags}", klass=klass)


_POSTMARK_REASONS = "HardBounce, SpamComplaint, ManualSuppression"


def _postmark(row: Row, classes: Collection[str]) -> Mapped:
    reason = _norm(row.get("reason", ""))
    origin = row.get("origin", "").strip()
    if reason == "hardbounce":
        return Mapped(Cause.BOUNCE, Level.HARD, True, detail="HardBounce")
    if reason == "spamcomplaint":
        return Mapped(Cause.COMPLAINT, Level.PERMANENT, False, detail="SpamComplaint")
    if reason == "manualsuppression":
        # Origin Recipient: the recipient used the unsubscribe link; Customer or Admin: a person added it.
        cause = Cause.UNSUBSCRIBE if _norm(origin) == "recipient" else Cause.MANUAL
        return Mapped(cause, Level.PERMANENT, False, detail=_text("ManualSuppression", origin))
    raise RowError(f"SuppressionReason: {row.get('reason', '')!r} is not one of {_POSTMARK_REASONS}")


def _ses(row: Row, classes: Collection[str]) -> Mapped:
    reason = row.get("reason", "").strip().upper()
    if reason == "BOUNCE":
        return Mapped(Cause.BOUNCE, Level.HARD, True, detail="BOUNCE")
    if reason == "COMPLAINT":
        return Mapped(Cause.COMPLAINT, Level.PERMANENT, False, detail="COMPLAINT")
    raise RowError(f"Reason: {row.get('reason', '')!r} is not BOUNCE or COMPLAINT")


_SG_CREATED = ("created", "created_at")
FORMATS: tuple[Format, ...] = (
    Format(
        "sendgrid-bounces",
        "SendGrid bounces",
        {"email": ("email",), "created": _SG_CREATED, "reason": ("reason",), "status": ("status",)},
        frozenset({"email", "created", "reason", "status"}),
        _sendgrid_bounce,
    ),
    Format(
        "sendgrid-blocks",
        "SendGrid blocks",
        {"email": ("email",), "created": _SG_CREATED, "reason": ("reason",), "status": ("status",)},
        frozenset({"email", "created", "reason", "status"}),
        _sendgrid_block,
    ),
    Format(
        "sendgrid-invalid-emails",
        "SendGrid invalid emails",
        {"email": ("email",), "created": _SG_CREATED, "reason": ("reason",)},
        frozenset({"email", "created", "reason"}),
        _sendgrid_invalid,
    ),
    Format(
        "sendgrid-spam-reports",
        "SendGrid spam reports",
        {"email": ("email",), "created": _SG_CREATED, "ip": ("ip",)},
        frozenset({"email", "created", "ip"}),
        _complaint,
    ),
    Format(
        "sendgrid-unsubscribes",
        "SendGrid unsubscribes",
        {"email": ("email",), "created": _SG_CREATED},
        frozenset({"email", "created"}),
        _unsubscribe,
    ),
    Format(
        "mailgun-bounces",
        "Mailgun bounces",
        {"email": ("address",), "code": ("code",), "error": ("error",), "created": ("created_at",)},
        frozenset({"email", "code", "error"}),
        _mailgun_bounce,
    ),
    Format(
        "mailgun-complaints",
        "Mailgun complaints",
        {"email": ("address",), "created": ("created_at",)},
        frozenset({"email", "created"}),
        _complaint,
    ),
    Format(
        "mailgun-unsubscribes",
        "Mailgun unsubscribes",
        {"email": ("address",), "tags": ("tags", "tag"), "created": ("created_at",)},
        frozenset({"email", "tags"}),
        _mailgun_unsubscribe,
    ),
    Format(
        "postmark",
        "Postmark suppressions",
        {
            "email": ("EmailAddress",),
            "reason": ("SuppressionReason",),
            "origin": ("Origin",),
            "created": ("CreatedAt",),
            "stream": ("MessageStream", "MessageStreamID"),
        },
        frozenset({"email", "reason"}),
        _postmark,
        json_key="Suppressions",
    ),
    Format(
        "ses-json",
        "SES account-level list",
        {"email": ("EmailAddress",), "reason": ("Reason",), "created": ("LastUpdateTime",)},
        frozenset({"email", "reason", "created"}),
        _ses,
        json_key="SuppressedDestinationSummaries",
    ),
)
BY_NAME = {f.name: f for f in FORMATS}
FORMAT_NAMES = ("auto", OWN, *BY_NAME)


def _columns(fmt: Format, header: list[str]) -> list[str] | None:
    """Our field for each header cell when `header` is exactly this format's, else None."""
    lookup = {_norm(alias): name for name, aliases in fmt.fields.items() for alias in aliases}
    names = [lookup.get(_norm(cell)) for cell in header]
    if any(n is None for n in names) or len(set(names)) != len(names) or not fmt.required <= set(names):
        return None
    return [n for n in names if n is not None]


def detect(header: list[str], filename: str = "") -> tuple[Format | None, str | None]:
    """The provider format whose columns `header` has (None: not a provider's), and a
    note for the operator when the choice was a guess."""
    found = [f for f in FORMATS if _columns(f, header)]
    if not found:
        return None, None
    if {f.name for f in found} == {"sendgrid-bounces", "sendgrid-blocks"}:
        chosen = BY_NAME["sendgrid-blocks" if "block" in filename.lower() else "sendgrid-bounces"]
        return chosen, (
            "SendGrid's bounces and blocks exports have the same columns; a file name with 'block' "
            "in it is read as blocks, any other as bounces (--format sendgrid-blocks says so outright)"
        )
    return found[0], None


# -- times ------------------------------------------------------------------------------


def parse_time(text: str) -> datetime | None:
    """A provider's time: Unix seconds (SendGrid's API, the AWS CLI v1), ISO 8601
    (Postmark, the AWS CLI v2) or RFC 2822 (Mailgun); one without a zone is UTC."""
    text = text.strip()
    if not text:
        return None
    value: datetime | None = None
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        value = datetime.fromtimestamp(float(text), UTC)
    else:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            try:
                value = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                value = None
    if value is None:
        raise RowError(f"{text!r} is not a date (Unix seconds, ISO 8601 or RFC 2822)")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- rows to entries --------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    now: datetime
    classes: Collection[str]
    default_class: str = ALL
    temporary_lasts: timedelta = timedelta(hours=1)  # [policy] soft_bounce_expiry


def to_entry(fmt: Format, row: Row, opts: Options) -> Suppression | RowProblem:
    """One entry for one row; raises RowError for a bad row, returns a message (no
    line yet) for a row that is valid but suppresses nothing any more."""
    try:
        address = normalise(row.get("email", ""))
    except AddressError as exc:
        raise RowError(f"{fmt.fields['email'][0]}: {exc}") from None
    mapped = fmt.map_row(row, opts.classes)
    try:
        when = parse_time(row.get("created", ""))
    except RowError as exc:
        raise RowError(f"{fmt.fields['created'][0]}: {exc}") from None
    created = min(when, opts.now) if when is not None else opts.now
    expires = None
    if mapped.temporary:
        if when is None:
            return RowProblem(0, f"{address}: a temporary failure without a time: skipped")
        expires = when + opts.temporary_lasts
        if expires <= opts.now:
            return RowProblem(0, f"{address}: temporary failure, expired at {to_text(expires)}: skipped")
    klass = ALL if mapped.mailbox else mapped.klass or opts.default_class
    reason = " ".join(_text(f"imported from {fmt.title}", mapped.detail).split())
    return Suppression(
        address=address,
        klass=klass,
        level=mapped.level,
        cause=mapped.cause,
        reason=reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 3] + "...",
        created_at=created,
        updated_at=opts.now,
        expires_at=expires,
    )


def _collect(fmt: Format, rows: Iterator[tuple[int, Row]], opts: Options, result: ParsedImport) -> None:
    for line, row in rows:
        try:
            outcome = to_entry(fmt, row, opts)
        except RowError as exc:
            result.errors.append(RowProblem(line, str(exc)))
            continue
        if isinstance(outcome, RowProblem):
            result.skipped.append(RowProblem(line, outcome.message))
        else:
            result.entries.append(outcome)
            result.lines.append(line)


def _csv_rows(reader: Any, columns: list[str], result: ParsedImport) -> Iterator[tuple[int, Row]]:
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if len(cells) > len(columns):
            result.errors.append(RowProblem(line, f"{len(cells)} columns, at most {len(columns)} expected"))
            continue
        yield line, dict(zip(columns, cells, strict=False))


def _scan(text: str, pos: int) -> list[tuple[int, Any]]:
    """The values of the JSON array whose first element may start at `pos`, each with its line."""
    decoder = json.JSONDecoder()
    out: list[tuple[int, Any]] = []
    for _ in range(len(text)):  # bounded: every pass consumes at least one character
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        item, end = decoder.raw_decode(text, pos)
        out.append((text.count("\n", 0, pos) + 1, item))
        pos = end
    return out


def _located(text: str, key: str, items: list[Any]) -> list[tuple[int, Any]]:
    """`items` (the parsed list under `key`) with the line each starts on, for bad-row reports.

    The key may also occur inside some string earlier in the file; the occurrence whose
    array reads back as `items` is the one.
    """
    for found in re.finditer(r'"' + re.escape(key) + r'"\s*:\s*\[', text):
        try:
            scanned = _scan(text, found.end())
        except ValueError:
            continue
        if [item for _, item in scanned] == items:
            return scanned
    return [(0, item) for item in items]


def _json_rows(text: str, items: list[Any], fmt: Format, result: ParsedImport) -> Iterator[tuple[int, Row]]:
    assert fmt.json_key is not None
    lookup = {_norm(alias): name for name, aliases in fmt.fields.items() for alias in aliases}
    for line, item in _located(text, fmt.json_key, items):
        if not isinstance(item, dict):
            what = f"expected an object in {fmt.json_key}, found {type(item).__name__}"
            result.errors.append(RowProblem(line, what))
            continue
        fields = {lookup[_norm(k)]: v for k, v in item.items() if _norm(k) in lookup}
        yield line, {name: "" if v is None else str(v) for name, v in fields.items()}


def _read_json(text: str, fmt_name: str, opts: Options) -> tuple[Format, ParsedImport]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CsvFormatError(f"line {exc.lineno}: not JSON: {exc.msg}") from None
    candidates = [BY_NAME[fmt_name]] if fmt_name != "auto" else [f for f in FORMATS if f.json_key]
    for fmt in candidates:
        if fmt.json_key and isinstance(doc, dict) and isinstance(doc.get(fmt.json_key), list):
            result = ParsedImport()
            _collect(fmt, _json_rows(text, doc[fmt.json_key], fmt, result), opts, result)
            result.errors.sort(key=lambda p: p.line)
            return fmt, result
    keys = " or ".join(f"{f.json_key!r} ({f.title})" for f in candidates if f.json_key)
    raise CsvFormatError(f"a JSON file needs a list under {keys or 'a known key'}")


@dataclass
class Read:
    """What `read_import` made of a file: whose format, its entries and problems, a note."""

    source: str  # the format's title, or "ses-relay CSV"
    parsed: ParsedImport
    note: str | None = None

    @property
    def from_ses_list(self) -> bool:
        """Whether the file is SES's account-level list (`list-suppressed-destinations` JSON):
        entries from it are SES's, and clearing them takes --force (relay/clearing.py)."""
        return self.source == BY_NAME["ses-json"].title


def read_import(text: str, *, filename: str = "", fmt_name: str = "auto", opts: Options) -> Read:
    """Recognise the file (or take `fmt_name`) and map every row; CsvFormatError when
    the file as a whole cannot be read (no row is imported then)."""
    if fmt_name not in FORMAT_NAMES:
        raise CsvFormatError(f"unknown format {fmt_name!r}; known: {', '.join(FORMAT_NAMES)}")
    if fmt_name == OWN:
        return Read("ses-relay CSV", _own(text, opts))
    if text.lstrip().startswith(("{", "[")):
        if fmt_name != "auto" and BY_NAME[fmt_name].json_key is None:
            raise CsvFormatError(f"this file is JSON; {BY_NAME[fmt_name].title} exports are CSV")
        fmt, parsed = _read_json(text, fmt_name, opts)
        return Read(fmt.title, parsed)
    reader = csv.reader(io.StringIO(text))
    header: list[str] = []
    for cells in reader:
        if any(c.strip() for c in cells):
            header = [c.strip() for c in cells]
            break
    if fmt_name == "auto":
        fmt, note = detect(header, filename)
        if fmt is None:
            try:
                return Read("ses-relay CSV", _own(text, opts))
            except CsvFormatError as exc:
                raise CsvFormatError(
                    f"{exc}; nor is it an export of SendGrid, Mailgun, Postmark or SES that "
                    f"ses-relay knows (--format names one: {', '.join(FORMAT_NAMES[2:])})"
                ) from None
    else:
        fmt, note = BY_NAME[fmt_name], None
    columns = _columns(fmt, header)
    if columns is None:
        wanted = ", ".join(aliases[0] for aliases in fmt.fields.values())
        raise CsvFormatError(f"line {reader.line_num}: not a {fmt.title} header (its columns: {wanted})")
    result = ParsedImport()
    _collect(fmt, _csv_rows(reader, columns, result), opts, result)
    result.errors.sort(key=lambda p: p.line)
    return Read(fmt.title, result, note)


def _own(text: str, opts: Options) -> ParsedImport:
    return parse_csv(text, now=opts.now, classes=opts.classes, default_class=opts.default_class)
