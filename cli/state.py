"""`ses-relay state ...`: where the state is kept, and whether this relay can use it."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

import click

from cli.app import Context, emit_json, fail, main
from cli.options import common_options, json_option
from relay.config import check_state_url
from relay.logredact import redact_url
from relay.store import MirrorProbe, StateProbe, StoreError, probe_state
from relay.timeutil import maybe_text

if TYPE_CHECKING:
    from relay.store.pg_copy import Copied


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


@state_group.command("migrate")
@click.option(
    "--to", "url", required=True, metavar="URL",
    help="The PostgreSQL database to copy into: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB.",
)  # fmt: skip
@json_option
@common_options
def state_migrate(ctx: Context, url: str, as_json: bool) -> None:
    """Copy this data dir's one-host state (its SQLite store) into PostgreSQL.

    Suppressions, submissions and statuses, the events log, notices, the review queue,
    dead letters, the audit log, histories and class pauses; not the spool, which stays
    here. Safe to run again: nothing is copied twice, and what changed here since is
    brought forward (statuses advance, suppressions merge). Prints a line per table
    as it is done. The schema there is created or updated first; a schema newer than
    this ses-relay is refused, with nothing copied.
    """
    from relay.store.pg_copy import copy_state
    from relay.store.places import host_id

    try:
        target = check_state_url(url)
    except ValueError as exc:
        fail(f"--to: {exc}", 2)
    if not target:
        fail("--to: give the PostgreSQL database to copy into", 2)
    if not ctx.store_path.is_file():
        fail(f"no store to copy: {ctx.store_path} does not exist (--data-dir names the relay's data dir)", 2)

    def done(counted: Copied) -> None:
        if not as_json:
            click.echo(_copied_line(counted))

    if not as_json:
        click.echo(f"copying {ctx.store_path} into {redact_url(target)}")
    try:
        results = copy_state(ctx.store_path, target, host_id(ctx.data_dir), done=done)
    except StoreError as exc:
        fail(f"cannot migrate: {exc}")
    if as_json:
        emit_json([{**dataclasses.asdict(c), "rows": c.rows} for c in results])
        return
    click.echo(
        "done. Set [state] url (or SES_RELAY_STATE_URL) to it on every relay and restart them; "
        "running this again copies only what is new."
    )


def _copied_line(c: Copied) -> str:
    parts = [f"{c.copied} copied", f"{c.present} already there"]
    if c.updated:
        parts.insert(1, f"{c.updated} brought forward")
    if c.skipped:
        parts.append(f"{c.skipped} skipped (their event is gone from the log)")
    return f"  {c.table}: " + ", ".join(parts)
