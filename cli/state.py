"""`ses-relay state ...`: where the state is kept, and whether this relay can use it."""

from __future__ import annotations

import dataclasses
import sys

import click

from cli.app import Context, emit_json, main
from cli.options import common_options, json_option
from relay.store import MirrorProbe, StateProbe, probe_state
from relay.timeutil import maybe_text


@main.group("state")
def state_group() -> None:
    """The state: suppressions, submissions, events, notices, class pauses (local or PostgreSQL)."""


@state_group.command("check")
@json_option
@common_options
def state_check(ctx: Context, as_json: bool) -> None:
    """Connect to the state and read its schema version; exit 1 on any problem.

    With [state] url set that is PostgreSQL (the URL is printed without its
    password), and the data dir's mirror of it: how far behind it is (changes and
    seconds), a problem past [state] mirror_max_age. Else the data dir's SQLite
    store. Nothing is created or migrated.
    """
    found = probe_state(ctx.store_path, ctx.config.state)
    problems = found.problems
    if as_json:
        doc = dataclasses.asdict(found)
        if found.mirror is not None:
            doc["mirror"]["synced_at"] = maybe_text(found.mirror.synced_at)
        emit_json({**doc, "problems": problems, "ok": not problems})
    else:
        for line in _lines(found):
            click.echo(line)
        for problem in problems:
            click.echo(f"problem: {problem}")
        click.echo("ok" if not problems else f"{len(problems)} problem(s)")
    if problems:
        sys.exit(1)


def _lines(found: StateProbe) -> list[str]:
    kind = "PostgreSQL (shared)" if found.backend == "postgresql" else "local SQLite (this host only)"
    lines = [f"state: {kind} at {found.where}"]
    if found.reachable:
        connected = f"connected in {found.connect_ms:g} ms" if found.connect_ms is not None else "readable"
        server = f", server {found.server_version}" if found.server_version else ""
        lines.append(f"  reachable: yes ({connected}{server})")
        lines.append(
            f"  schema version: {found.schema_version} (this ses-relay: {found.expected_schema_version})"
        )
    else:
        lines.append(f"  reachable: no ({found.error})")
    if found.backend == "postgresql":
        lines.append(_mirror_line(found.mirror))
    if found.outbox_backlog is not None:
        waiting = (
            f", the oldest {found.outbox_oldest_age_seconds:g} s old" if found.outbox_backlog else ""
        )
        lines.append(f"  outbox (this host, not yet shipped): {found.outbox_backlog} row(s){waiting}")
    return lines


def _mirror_line(mirror: MirrorProbe | None) -> str:
    if mirror is None:
        return "  mirror: none in this data dir (no relay runs here)"
    if mirror.synced_at is None or mirror.last_seq is None:
        return f"  mirror: not synced ({mirror.note or 'never'})"
    synced = f"last synced {mirror.synced_at:%Y-%m-%d %H:%M:%S} UTC"
    behind = "changes behind unknown" if mirror.behind is None else f"{mirror.behind} change(s) behind"
    lag = "" if mirror.lag_seconds is None else f", {mirror.lag_seconds:.1f} s behind"
    note = f"; {mirror.note}" if mirror.note else ""
    return f"  mirror: {behind}{lag} ({synced}, up to change {mirror.last_seq}{note})"
