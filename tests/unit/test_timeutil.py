"""Stored times read back (relay/timeutil.py): the fast path for what `to_text` writes gives
exactly what `strptime` gives, and everything else still goes through `strptime`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.timeutil import _FORMAT, from_text, to_text


def by_strptime(value: str) -> datetime:
    return datetime.strptime(value, _FORMAT).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    ["2026-11-29T14:00:00.123456Z", "0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z",
     "2024-02-29T00:00:00.000000Z", "2026-1-2T3:04:05.6Z", "2026-11-29T14:00:00.1Z"],
)  # fmt: skip
def test_stored_times_read_as_strptime_reads_them(value: str) -> None:
    read = from_text(value)
    assert read == by_strptime(value) and read.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    ["2026-13-01T00:00:00.000000Z", "2023-02-29T00:00:00.000000Z", "2026-11-29T24:00:00.000000Z",
     "2026-11-29 14:00:00.000000Z", "2026-11-29T14:00:00.000000+00:00", "2026-11-29", ""],
)  # fmt: skip
def test_what_strptime_refuses_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        by_strptime(value)
    with pytest.raises(ValueError):
        from_text(value)


def test_every_written_time_reads_back() -> None:
    start = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
    for step in range(0, 10**7, 7919):
        when = start + timedelta(seconds=step * 13, microseconds=step)
        assert from_text(to_text(when)) == when
