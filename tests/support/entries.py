"""Suppression entries for pure tests: a hard bounce in all classes unless told otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

from relay.suppression import ALL, Cause, Level, Suppression

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def suppression(address: str, **kw: object) -> Suppression:
    values: dict[str, object] = {
        "address": address,
        "klass": ALL,
        "level": Level.HARD,
        "cause": Cause.BOUNCE,
        "reason": "r",
        "created_at": NOW,
        "updated_at": NOW,
        "expires_at": None,
    }
    values.update(kw)
    return Suppression(**values)  # type: ignore[arg-type]
