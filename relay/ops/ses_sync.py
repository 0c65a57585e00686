"""Sync with SES's account-level suppression list (SESv2): pull it into ours, push ours to it.

Two lists exist because they do different jobs: SES's stops SES from delivering
(it accepts the message and bounces it, which still costs a send), ours refuses at
RCPT time and knows classes and expiries. Keeping them in step matters when moving
onto ses-relay (SES already knows the bad addresses) and when other senders share
the account (they benefit from what the relay learnt).

The mapping is lossy by design, and in the safe direction:
- pull: every SES entry becomes an all-classes entry that never expires (SES has
  neither classes nor expiries), a BOUNCE as a hard bounce, a COMPLAINT as a
  permanent complaint, merged under our rules (a level never goes down).
- push: only our all-classes bounce and complaint entries that never expire; an
  entry that expires here (a soft bounce, the 30-day Permanent/General one) would
  never expire at SES, and class-specific ones would block every class there.
  Addresses SES already lists are not put again. Nothing is ever deleted at SES.

Before either, `reconcile` reports what differs: the addresses on one side only
(compared case-insensitively, as SES keeps the spelling it was given), each with
what its side says and since when.

The planning is pure (`plan_pull`, `plan_push`, `reconcile`); `SesSuppressionList` is
the boto3 shell. moto 5.2 does not implement these SESv2 operations (it answers 404), so the
tests run them against a small stand-in that forwards everything else to moto.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.addresses import AddressError, normalise
from relay.ops.suppression_csv import ses_reason
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import maybe_text, to_text

PAGE_SIZE = 1000  # SESv2's largest page
MAX_PAGES = 10_000  # ten million addresses: a bound, not an expectation
SYNC_CAUSES = (Cause.BOUNCE, Cause.COMPLAINT)


class SesSyncError(RuntimeError):
    """SES refused or could not be reached; the message is for the operator."""


@dataclass(frozen=True)
class SesSuppressed:
    """One entry of SES's list, as SES has it."""

    address: str
    reason: str  # BOUNCE | COMPLAINT
    last_update: datetime


def from_ses(item: SesSuppressed, address: str, now: datetime) -> Suppression:
    """Our entry for an SES entry (address already normalised)."""
    bounce = item.reason == "BOUNCE"
    return Suppression(
        address=address,
        klass=ALL,
        level=Level.HARD if bounce else Level.PERMANENT,
        cause=Cause.BOUNCE if bounce else Cause.COMPLAINT,
        reason=f"on SES's account-level suppression list ({item.reason})",
        created_at=min(item.last_update, now),
        updated_at=now,
        expires_at=None,
    )


@dataclass
class PullPlan:
    new: list[Suppression] = field(default_factory=list)  # no active all-classes entry here yet
    known: list[Suppression] = field(default_factory=list)  # merged too: SES may hold it longer
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (address as SES has it, why)

    @property
    def to_merge(self) -> list[Suppression]:
        return self.new + self.known


def plan_pull(
    items: Iterable[SesSuppressed], ours: Mapping[str, list[Suppression]], now: datetime
) -> PullPlan:
    """Sort SES's entries into new and already-suppressed ones; `ours`: active entries by address."""
    plan = PullPlan()
    seen: set[str] = set()
    for item in items:
        try:
            address = normalise(item.address)
        except AddressError as exc:
            plan.invalid.append((item.address, exc.why))
            continue
        if address in seen:
            continue
        seen.add(address)
        entry = from_ses(item, address, now)
        if any(e.klass == ALL and e.active(now) for e in ours.get(address, ())):
            plan.known.append(entry)
        else:
            plan.new.append(entry)
    return plan


@dataclass
class PushPlan:
    to_put: list[tuple[str, str]] = field(default_factory=list)  # (address, BOUNCE|COMPLAINT)
    already: list[str] = field(default_factory=list)  # SES lists them already (any reason)
    expiring: list[str] = field(default_factory=list)  # expire here; SES entries do not


def plan_push(entries: Iterable[Suppression], at_ses: Mapping[str, str], now: datetime) -> PushPlan:
    """Which of our entries to put on SES's list; `at_ses`: normalised address -> SES reason."""
    plan = PushPlan()
    for e in entries:
        if e.klass != ALL or e.cause not in SYNC_CAUSES or not e.active(now):
            continue
        if e.expires_at is not None:
            plan.expiring.append(e.address)
        elif e.address in at_ses:
            plan.already.append(e.address)
        else:
            plan.to_put.append((e.address, ses_reason(e.cause)))
    return plan


def ses_index(items: Iterable[SesSuppressed]) -> dict[str, str]:
    """SES's entries by normalised address (entries that do not normalise cannot match ours)."""
    out: dict[str, str] = {}
    for item in items:
        try:
            out[normalise(item.address)] = item.reason
        except AddressError:
            continue
    return out


# -- the reconciliation report (`sync-ses --report`) ------------------------------------


@dataclass(frozen=True)
class OnlyHere:
    """An address we suppress (in some class) that SES's list does not hold."""

    address: str
    entries: tuple[Suppression, ...]  # our active entries for it, every class
    pushable: bool  # `--push` would put it on SES's list


@dataclass(frozen=True)
class OnlyAtSes:
    """An address on SES's list with no active entry here, as SES spells it."""

    address: str  # compared form: normalised, else lower-cased
    item: SesSuppressed


@dataclass
class Reconciliation:
    only_here: list[OnlyHere] = field(default_factory=list)
    only_at_ses: list[OnlyAtSes] = field(default_factory=list)
    here: int = 0  # addresses with an active entry here
    at_ses: int = 0  # distinct addresses on SES's list
    on_both: int = 0


def compared(address: str) -> str:
    """The form both lists are compared in: SES keeps the spelling it was given
    (`Shouty@Example.COM`), ours is normalised; an unusable address is lower-cased."""
    try:
        return normalise(address)
    except AddressError:
        return address.strip().lower()


def reconcile(ours: Iterable[Suppression], items: Iterable[SesSuppressed], now: datetime) -> Reconciliation:
    """Addresses on one side only (case-insensitively), each with what its side says."""
    here: dict[str, list[Suppression]] = {}
    for e in ours:
        if e.active(now):
            here.setdefault(e.address, []).append(e)
    theirs: dict[str, SesSuppressed] = {}
    for item in items:
        theirs.setdefault(compared(item.address), item)
    pushable = {address for address, _ in plan_push((e for es in here.values() for e in es), {}, now).to_put}
    report = Reconciliation(here=len(here), at_ses=len(theirs), on_both=len(here.keys() & theirs.keys()))
    for address in sorted(here.keys() - theirs.keys()):
        entries = tuple(sorted(here[address], key=lambda e: e.klass))
        report.only_here.append(OnlyHere(address, entries, address in pushable))
    for address in sorted(theirs.keys() - here.keys()):
        report.only_at_ses.append(OnlyAtSes(address, theirs[address]))
    return report


def report_json(report: Reconciliation) -> dict[str, Any]:
    return {
        "here": report.here,
        "at_ses": report.at_ses,
        "on_both": report.on_both,
        "only_here": [
            {
                "address": row.address,
                "pushable": row.pushable,
                "suppressions": [
                    {
                        "class": e.klass,
                        "level": str(e.level),
                        "cause": str(e.cause),
                        "reason": e.reason,
                        "created_at": to_text(e.created_at),
                        "updated_at": to_text(e.updated_at),
                        "expires_at": maybe_text(e.expires_at),
                    }
                    for e in row.entries
                ],
            }
            for row in report.only_here
        ],
        "only_at_ses": [
            {
                "address": row.address,
                "ses_address": row.item.address,
                "reason": row.item.reason,
                "last_update_time": to_text(row.item.last_update),
            }
            for row in report.only_at_ses
        ],
    }


def report_lines(report: Reconciliation) -> list[str]:
    """The report for people: a summary, then each side's own addresses with what it says."""
    lines = [
        f"here: {report.here} address(es) suppressed; SES's account-level list: {report.at_ses}; "
        f"on both: {report.on_both}",
        f"only here ({len(report.only_here)}):",
    ]
    for row in report.only_here:
        lines.append(f"  {row.address}{'  (--push would add it)' if row.pushable else ''}")
        for e in row.entries:
            expires = "never expires" if e.expires_at is None else f"expires {to_text(e.expires_at)}"
            scope = "all classes" if e.klass == ALL else f"class {e.klass}"
            lines.append(
                f"    {scope}: {e.level} {e.cause} since {to_text(e.created_at)}, {expires}: {e.reason}"
            )
    lines.append(f"only at SES ({len(report.only_at_ses)}):")
    for row in report.only_at_ses:
        lines.append(f"  {row.item.address}: {row.item.reason} since {to_text(row.item.last_update)}")
    return lines


class SesSuppressionList:
    """The account-level list through boto3's sesv2 client (blocking calls)."""

    def __init__(self, *, region: str, endpoint_url: str | None = None, client: Any = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            retries = BotoConfig(
                retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=30
            )
            client = boto3.session.Session().client(
                "sesv2", region_name=region, endpoint_url=endpoint_url, config=retries
            )
        self._client = client

    def list_all(self) -> list[SesSuppressed]:
        """Every entry, following NextToken (bounded by MAX_PAGES)."""
        items: list[SesSuppressed] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {"PageSize": PAGE_SIZE}
            if token:
                kwargs["NextToken"] = token
            reply = self._call(
                "ListSuppressedDestinations", self._client.list_suppressed_destinations, kwargs
            )
            for row in reply.get("SuppressedDestinationSummaries", []):
                when = row.get("LastUpdateTime")
                items.append(
                    SesSuppressed(
                        address=str(row["EmailAddress"]),
                        reason=str(row.get("Reason", "BOUNCE")),
                        last_update=when.astimezone(UTC) if isinstance(when, datetime) else datetime.now(UTC),
                    )
                )
            token = reply.get("NextToken")
            if not token:
                return items
        raise SesSyncError(f"SES's suppression list did not end within {MAX_PAGES} pages")

    def put(self, address: str, reason: str) -> None:
        self._call(
            "PutSuppressedDestination",
            self._client.put_suppressed_destination,
            {"EmailAddress": address, "Reason": reason},
        )

    @staticmethod
    def _call(name: str, method: Any, kwargs: dict[str, Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.get("Code") or status
            message = (error.get("Message") or "").strip().splitlines()[0:1]
            raise SesSyncError(f"SES {name} failed: {code}{': ' + message[0] if message else ''}") from exc
        except BotoCoreError as exc:
            raise SesSyncError(f"SES {name} failed: {exc}") from exc
