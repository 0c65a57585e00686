"""Time as the store and the reports see it: aware UTC datetimes, ISO-8601 text.

All stored timestamps use one fixed-width format so that text comparison in SQL
orders them correctly (expiry checks, "since" filters).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_STORED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z", re.ASCII)  # what to_text writes


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime: every time in ses-relay is UTC-aware")
    return value.astimezone(UTC).strftime(_FORMAT)


def from_text(value: str | datetime) -> datetime:
    """A stored time as an aware UTC datetime.

    SQLite keeps times as text; a PostgreSQL `timestamptz` column comes back as a
    datetime already, so the same row decoding serves both.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: every time in ses-relay is UTC-aware")
        return value.astimezone(UTC)
    if _STORED.match(value):  # fromisoformat reads exactly this form ~20x faster than strptime
        return datetime.fromisoformat(value)
    return datetime.strptime(value, _FORMAT).replace(tzinfo=UTC)


def maybe_text(value: datetime | None) -> str | None:
    return None if value is None else to_text(value)


def maybe_time(value: str | datetime | None) -> datetime | None:
    return None if value is None else from_text(value)


def new_id(now: datetime | None = None) -> str:
    """A submission id: sortable by time (12 hex digits of milliseconds) and unique
    (8 random hex digits), short enough to quote in a `250 ... queued as` reply."""
    ms = int((now or utcnow()).timestamp() * 1000)
    return f"{ms:012x}{secrets.token_hex(4)}"


def id_floor(at: datetime) -> str:
    """The smallest id `new_id` gives at `at` or later: ids sort by time, so
    `id >= id_floor(t)` limits a scan of submissions to those since `t`."""
    return f"{int(at.timestamp() * 1000):012x}"
