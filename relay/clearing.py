"""The rules for clearing suppressions by hand (pure): what needs `--force` and a
`--reason`, the daily limit, and the words of a refusal.

A mistaken clear of a complaint, an unsubscribe or an address on SES's account-level
list mails someone who said no, or whom SES itself suppresses for the whole account:
that is what gets SES accounts reviewed. Clearing such an entry takes `--force` and a
`--reason` (kept in its history). All clears together, by every admin, are limited to
`[policy] max_clears_per_day` in any 24 hours unless forced: a script clearing
hundreds of addresses is more likely a mistake than a day's support work. The store
weighs a request (`judge`) in the transaction that clears, so two admins at once cannot
both take the day's last clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from relay.suppression import ALL, Cause, Suppression
from relay.suppression_history import HistoryRow, current, from_ses_list
from relay.timeutil import to_text

LIMIT_SPAN = timedelta(days=1)  # max_clears_per_day counts the clears of the last 24 hours
DEFAULT_REASON = "cleared by admin"

_GUARDED_CAUSES = {
    Cause.COMPLAINT: "a complaint: the recipient reported this mail as spam, and complaints are what "
    "get SES accounts reviewed",
    Cause.UNSUBSCRIBE: "an unsubscribe: the recipient asked for no more of this mail",
}
SES_LIST = "from SES's account-level list: SES itself suppresses the address for the whole account"


@dataclass(frozen=True)
class ClearRequest:
    address: str
    klass: str | None  # None: every class
    actor: str
    reason: str | None = None  # the admin's words; None: none given
    force: bool = False
    max_per_day: int | None = None  # None: no daily limit

    @property
    def note(self) -> str:
        """What the history and the audit log keep of the request."""
        words = self.reason or DEFAULT_REASON
        return f"{words} (--force)" if self.force else words


@dataclass(frozen=True)
class Weighed:
    entry: Suppression
    guarded: str | None  # why clearing it takes --force and --reason; None: it does not


@dataclass(frozen=True)
class ClearVerdict:
    """What a request to clear met: the entries, the day's count, and why it was refused (if so)."""

    request: ClearRequest
    entries: tuple[Weighed, ...]
    cleared_before: int  # entries cleared in the last 24 hours, before this request
    problems: tuple[str, ...] = ()  # empty: cleared (when there was anything to clear)

    @property
    def cleared(self) -> list[Suppression]:
        return [] if self.problems else [w.entry for w in self.entries]

    @property
    def left_today(self) -> int | None:
        """Clears left within the limit after this request (None: no limit)."""
        limit = self.request.max_per_day
        if limit is None:
            return None
        return max(0, limit - self.cleared_before - len(self.cleared))


def guard(entry: Suppression, rows: Sequence[HistoryRow]) -> str | None:
    """Why clearing `entry` takes --force and --reason (None: it does not); `rows`: the
    address's history, oldest first."""
    if entry.cause in _GUARDED_CAUSES:
        return _GUARDED_CAUSES[entry.cause]
    if from_ses_list(current(rows, entry.klass)):
        return SES_LIST
    return None


def judge(
    request: ClearRequest, entries: Sequence[Suppression], rows: Sequence[HistoryRow], cleared_before: int
) -> ClearVerdict:
    """Weigh a request to clear `entries` (the address's, in the request's class or all)."""
    weighed = tuple(Weighed(e, guard(e, rows)) for e in entries)
    problems = []
    if any(w.guarded for w in weighed) and not (request.force and request.reason):
        wanted = (("--force", request.force), ("--reason TEXT", request.reason))
        missing = ", ".join(what for what, given in wanted if not given)
        problems.append(
            "an entry caused by a complaint, an unsubscribe or SES's account-level list is cleared "
            f"only with --force and --reason TEXT (kept in its history); missing: {missing}"
        )
    limit = request.max_per_day
    if limit is not None and not request.force and cleared_before + len(weighed) > limit:
        problems.append(
            f"{cleared_before} clear(s) in the last 24 hours; {len(weighed)} more would pass "
            f"[policy] max_clears_per_day = {limit} (--force goes past it)"
        )
    return ClearVerdict(request, weighed, cleared_before, tuple(problems) if weighed else ())


def describe(entry: Suppression) -> str:
    """One line for an entry in a refusal or a confirmation."""
    scope = "all classes" if entry.klass == ALL else f"class {entry.klass}"
    expires = "never expires" if entry.expires_at is None else f"expires {to_text(entry.expires_at)}"
    since = to_text(entry.created_at)
    return f"{scope}: {entry.level} {entry.cause} since {since}, {expires}: {entry.reason}"


def refusal_lines(verdict: ClearVerdict) -> list[str]:
    """Why a request was refused, entry by entry, and what would let it through."""
    lines = [f"not cleared: {verdict.request.address}"]
    for w in verdict.entries:
        lines.append(f"  {describe(w.entry)}")
        if w.guarded:
            lines.append(f"    guarded: {w.guarded}")
    lines += [f"  {p}" for p in verdict.problems]
    lines.append(f"  {left_line(verdict)}")
    return lines


def left_line(verdict: ClearVerdict) -> str:
    limit = verdict.request.max_per_day
    if limit is None:
        return "no daily limit on clears"
    return f"clears left today: {verdict.left_today} of {limit} (the last 24 hours)"
