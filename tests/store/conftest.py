"""Store tests run against each backend that can hold the state: `place` is one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stores import Place

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """A data dir with the state in its SQLite file, or in a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return Place(tmp_path)
    return Place(tmp_path, request.getfixturevalue("pg_url"))
