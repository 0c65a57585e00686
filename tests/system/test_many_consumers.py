"""Many consumers, one suppression table: 10,000 replayed SES events split over two consumers
end in exactly the suppression table one consumer applying them in order ends in.

Real PostgreSQL, real processes: `ses-relay feedback replay` applies the whole mix, in the
order the events happened, into one database; into another, two `feedback replay`
processes run at the same time, one on the earlier half and one on the later half, so
that each address's events arrive out of order and batches about the same addresses
meet at their per-address locks. Every column of every suppression row must match.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import PG_TEMPLATE, SES_RELAY, child_env
from tests.support.event_mix import event_mix, write_lines

EVENTS = 10_000


def rows(url: str, statement: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(statement).fetchall()


def replay(url: str, data_dir: Path, *files: Path) -> subprocess.Popen[str]:
    cmd = [SES_RELAY, "feedback", "replay", *map(str, files), "--data-dir", str(data_dir)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env({"SES_RELAY_STATE_URL": url}),
    )  # fmt: skip


def finished(*procs: subprocess.Popen[str], timeout: float = 240) -> list[str]:
    """Their standard output, once each has exited 0. Their pipes are read all at once: a
    process whose pipe nobody reads (while the other is waited for) blocks on a log line
    inside its transaction, holding the address locks the other one is waiting for."""
    with ThreadPoolExecutor(len(procs)) as pool:
        results = list(pool.map(lambda proc: proc.communicate(timeout=timeout), procs))
    outputs = []
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


@pytest.fixture
def second_pg_url(pg_server: Any) -> Iterator[str]:
    url = pg_server.database(template=PG_TEMPLATE)
    yield url
    pg_server.drop(url.rsplit("/", 1)[1])


def test_two_consumers_on_the_halves_end_in_the_suppression_table_of_one_in_order(
    tmp_path: Path, pg_url: str, second_pg_url: str
) -> None:
    events = event_mix(EVENTS)
    whole = write_lines(tmp_path / "events.jsonl", events)
    earlier = write_lines(tmp_path / "earlier.jsonl", events[: EVENTS // 2])
    later = write_lines(tmp_path / "later.jsonl", events[EVENTS // 2 :])

    [one] = finished(replay(pg_url, tmp_path / "one", whole))
    assert f"applied {EVENTS} event(s)" in one
    two = finished(
        replay(second_pg_url, tmp_path / "a", later), replay(second_pg_url, tmp_path / "b", earlier)
    )
    assert all(f"applied {EVENTS // 2} event(s)" in out for out in two)

    table = "SELECT * FROM suppressions ORDER BY address, class"
    in_order, concurrent = rows(pg_url, table), rows(second_pg_url, table)
    assert len(in_order) > 200
    assert concurrent == in_order
    # The mix has every kind of entry in it, escalations among them.
    assert {r["level"] for r in in_order} == {1, 2, 3}
    assert sum("transient bounces within" in r["reason"] for r in in_order) > 50
    # Every event was applied exactly once, and counted for escalation once.
    for statement in ("SELECT count(*) AS n FROM events", "SELECT count(*) AS n FROM transient_bounces"):
        assert rows(pg_url, statement) == rows(second_pg_url, statement)
    assert rows(pg_url, "SELECT count(*) AS n FROM events") == [{"n": EVENTS}]
