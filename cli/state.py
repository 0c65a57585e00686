"""`ses-relay state ...`: where the state is kept, and whether this relay can use it."""

from __future__ import annotations

import dataclasses
import sys

import click

from cli.app import Context, emit_json, main
from cli.options import common_options, json_option
from relay.store import StateProbe, probe_state


@main.group("state")
def state_group() -> None:
    """The state: suppressions, submissions, events, notices, class pauses (local or PostgreSQL)."""


@state_group.command("check")
@json_option
@common_options
def state_check(ctx: Context, as_json: bool) -> None:
    """Connect to the state and read its schema version; exit 1 on any problem.

    With [state] url set that is PostgreSQL (the URL is printed without its
    password); else the data dir's SQLite store. Nothing is created or migrated.
    """
    found = probe_state(ctx.store_path, ctx.config.state)
    problems = found.problems
    if as_json:
        emit_json({**dataclasses.asdict(found), "problems": problems, "ok": not problems})
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
    if found.outbox_backlog is not None:
        waiting = (
            f", the oldest {found.outbox_oldest_age_seconds:g} s old" if found.outbox_backlog else ""
        )
        lines.append(f"  outbox (this host, not yet shipped): {found.outbox_backlog} row(s){waiting}")
    return lines
