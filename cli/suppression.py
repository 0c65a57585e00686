"""`ses-relay suppression ...`: list, inspect, add, clear, export, import, sync with SES."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from cli.app import Context, actor, emit_json, fail, main, require_store, with_store
from cli.options import address_argument, common_options, json_option
from relay.addresses import AddressError, normalise
from relay.ops.provider_imports import FORMAT_NAMES as PROVIDER_FORMATS
from relay.store import Store
from relay.suppression import ALL, Cause, Level, Suppression
from relay.suppression_history import HistoryRow, Source
from relay.timeutil import maybe_text, to_text, utcnow


@main.group("suppression")
def suppression_group() -> None:
    """List, inspect, add and clear suppressed addresses."""


def _class_option(ctx: Context, value: str | None) -> str | None:
    if value is None or value == ALL or value in ctx.config.classes:
        return value
    fail(f"--class: unknown class {value!r}; configured: {', '.join(sorted(ctx.config.classes))} or '*'", 2)


def suppression_json(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "class": entry.klass,
        "level": str(entry.level),
        "cause": str(entry.cause),
        "reason": entry.reason,
        "expires_at": maybe_text(entry.expires_at),
        "created_at": to_text(entry.created_at),
        "updated_at": to_text(entry.updated_at),
        "feedback_id": entry.feedback_id,
        "ses_message_id": entry.ses_message_id,
        "refused_count": entry.refused_count,
        "last_refused_at": maybe_text(entry.last_refused_at),
    }


@suppression_group.command("add")
@click.argument("address")
@click.option("--class", "klass", default=ALL, show_default=True, help="Class to suppress in ('*' = all).")
@click.option("--reason", default="added by admin", show_default=True, help="Why; shown in RCPT replies.")
@click.option("--until", "until", help="Expire at this ISO date/time (UTC unless an offset is given).")
@click.option("--days", type=click.IntRange(min=1), help="Expire after this many days.")
@click.option(
    "--level",
    type=click.Choice([str(lvl) for lvl in Level]),
    default="hard",
    show_default=True,
    help="Suppression level; an existing stronger level is kept.",
)
@common_options
def suppression_add(
    ctx: Context, address: str, klass: str, reason: str, until: str | None, days: int | None, level: str
) -> None:
    """Suppress ADDRESS (in all classes unless --class); indefinite unless --until/--days."""
    addr = address_argument(address)
    _class_option(ctx, klass)
    if until and days:
        fail("give --until or --days, not both", 2)
    now = utcnow()
    expires: datetime | None = None
    if until:
        try:
            expires = datetime.fromisoformat(until)
        except ValueError:
            fail(f"--until: {until!r} is not an ISO date or date-time", 2)
        expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
        if expires <= now:
            fail(f"--until: {until} is in the past", 2)
    elif days:
        expires = now + timedelta(days=days)
    entry = Suppression(
        address=addr,
        klass=klass,
        level=Level.parse(level),
        cause=Cause.MANUAL,
        reason=reason,
        created_at=now,
        updated_at=now,
        expires_at=expires,
    )
    merged = with_store(ctx, lambda store: store.merge_suppression(entry, actor=actor(), action="add"))
    until_text = "indefinitely" if merged.expires_at is None else f"until {to_text(merged.expires_at)}"
    click.echo(f"suppressed {merged.address} in class {merged.klass} ({merged.level}) {until_text}")


@suppression_group.command("list")
@click.option("--class", "klass", help="Only this class ('*' for the all-classes entries).")
@click.option("--level", type=click.Choice([str(lvl) for lvl in Level]), help="Only this level.")
@click.option("--all", "include_expired", is_flag=True, help="Include expired entries.")
@json_option
@common_options
def suppression_list(
    ctx: Context, klass: str | None, level: str | None, include_expired: bool, as_json: bool
) -> None:
    """List active suppressions."""
    _class_option(ctx, klass)
    entries = with_store(
        ctx,
        lambda store: store.list_suppressions(
            now=utcnow(),
            klass=klass,
            level=Level.parse(level) if level else None,
            include_expired=include_expired,
        ),
        create=False,
    )
    if as_json:
        emit_json(
            [
                {k: v for k, v in suppression_json(e).items() if k not in ("updated_at",)}
                for e in entries
            ]
        )
        return
    if not entries:
        click.echo("no suppressions")
        return
    for e in entries:
        expires = "never" if e.expires_at is None else to_text(e.expires_at)
        click.echo(f"{e.address}\t{e.klass}\t{e.level}\t{expires}\t{e.cause}: {e.reason}")


@suppression_group.command("show")
@click.argument("address")
@json_option
@common_options
def suppression_show(ctx: Context, address: str, as_json: bool) -> None:
    """Why ADDRESS is suppressed, since when, until when, how many sends it has refused,
    and its history: every change of its entries, oldest first, with who or what made it."""
    from relay.ops.suppression_story import step_json, story, story_lines

    addr = address_argument(address)

    async def read(store: Store) -> tuple[list[Suppression], list[HistoryRow]]:
        return await store.suppressions_of(addr), await store.suppression_history(addr)

    entries, rows = with_store(ctx, read, create=False)
    now = utcnow()
    steps = story(rows, now)
    if as_json:
        emit_json(
            {
                "address": addr,
                "suppressions": [
                    {**suppression_json(e), "active": e.active(now)}
                    for e in entries
                ],
                "history": [step_json(s) for s in steps],
            }
        )
        return
    if not entries:
        click.echo(f"{addr} is not suppressed")
    for e in entries:
        state = "active" if e.active(now) else "expired"
        expires = "never (until cleared)" if e.expires_at is None else to_text(e.expires_at)
        scope = "all classes" if e.klass == ALL else f"class {e.klass}"
        click.echo(f"{addr}: {scope}, {e.level}, {state}")
        click.echo(f"  cause:    {e.cause}: {e.reason}")
        if e.feedback_id or e.ses_message_id:
            click.echo(f"  from SES: feedback {e.feedback_id or '-'}, message {e.ses_message_id or '-'}")
        click.echo(f"  since:    {to_text(e.created_at)} (last raised {to_text(e.updated_at)})")
        click.echo(f"  expires:  {expires}")
        last = f", last at {to_text(e.last_refused_at)}" if e.last_refused_at else ""
        click.echo(f"  refused:  {e.refused_count} send(s){last}")
    if rows or entries:
        click.echo("\n".join(story_lines(steps)))


@suppression_group.command("clear")
@click.argument("address")
@click.option("--class", "klass", help="Clear only this class ('*' = the all-classes entry); default all.")
@click.option("--reason", help="Why; kept in the entry's history and the audit log. Needed, with "
              "--force, to clear a complaint, an unsubscribe or an entry from SES's account-level list.")
@click.option("--force", is_flag=True, help="Clear such an entry (with --reason), or go past "
              "[policy] max_clears_per_day.")  # fmt: skip
@common_options
def suppression_clear(ctx: Context, address: str, klass: str | None, reason: str | None, force: bool) -> None:
    """Remove ADDRESS's suppressions (audited, and kept in its history).

    Clearing an entry caused by a complaint, an unsubscribe or SES's account-level list
    takes --force and --reason; all clears together are limited to [policy]
    max_clears_per_day in any 24 hours unless --force. A refusal says why and exits 1.
    """
    from relay.clearing import ClearRequest, left_line, refusal_lines

    addr = address_argument(address)
    _class_option(ctx, klass)
    if reason is not None and not reason.strip():
        fail("--reason: say why, in words", 2)
    request = ClearRequest(
        addr, klass, actor(), reason.strip() if reason else None, force, ctx.config.policy.max_clears_per_day
    )
    verdict = with_store(ctx, lambda store: store.clear_suppressions(request, utcnow()))
    if not verdict.entries:
        fail(f"{addr} has no suppression{'' if klass is None else f' in class {klass}'}")
    if verdict.problems:
        fail("\n".join(refusal_lines(verdict)))
    for e in verdict.cleared:
        click.echo(f"cleared {addr} in class {e.klass} (was {e.level} {e.cause}: {e.reason})")
    click.echo(left_line(verdict))


# -- import / export / sync-ses (relay/ops/suppression_csv.py, relay/ops/ses_sync.py) -----


@suppression_group.command("export")
@click.argument("file", required=False, default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["full", "ses"]),
    default="full",
    show_default=True,
    help="full: every column, with a header; ses: email,BOUNCE|COMPLAINT only, no header, "
    "all-class entries that never expire (for SES's bulk import).",
)
@click.option("--class", "klass", help="Only this class ('*' for the all-classes entries).")
@click.option("--all", "include_expired", is_flag=True, help="Include expired entries.")
@common_options
def suppression_export(ctx: Context, file: str, fmt: str, klass: str | None, include_expired: bool) -> None:
    """Write suppressions as CSV to FILE (default standard output)."""
    from relay.ops.suppression_csv import write_csv

    _class_option(ctx, klass)
    entries = with_store(
        ctx,
        lambda store: store.list_suppressions(now=utcnow(), klass=klass, include_expired=include_expired),
        create=False,
    )
    if file == "-":
        write_csv(entries, sys.stdout, fmt)  # type: ignore[arg-type]
        return
    try:
        with open(file, "w", newline="", encoding="utf-8") as out:
            count = write_csv(entries, out, fmt)  # type: ignore[arg-type]
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror}")
    click.echo(f"exported {count} suppression(s) to {file}", err=True)


@suppression_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--class",
    "klass",
    default=ALL,
    show_default=True,
    help="Class for rows without one ('*' = all); providers' bounces are always all-class.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(PROVIDER_FORMATS),
    default="auto",
    show_default=True,
    help="What FILE is; auto recognises it by its header row (or JSON keys).",
)
@click.option("--dry-run", is_flag=True, help="Print what each row would do; change nothing.")
@common_options
def suppression_import(ctx: Context, file: str, klass: str, fmt: str, dry_run: bool) -> None:
    """Import suppressions from FILE: ses-relay's CSV, SES's email,reason, the CSV exports
    of SendGrid, Mailgun and Postmark, or the JSON of SES's list-suppressed-destinations
    or Postmark's suppression dump.

    Bad rows are reported with their line numbers and the rest imported; the exit
    status is 1 when any row was bad. Existing entries are merged: a level never
    goes down and an expiry only extends; rows already covered change nothing and
    are not audited, so importing a file twice writes it once.
    """
    from relay.ops import import_plan, suppression_io
    from relay.ops.provider_imports import Options, read_import
    from relay.ops.suppression_csv import CsvFormatError

    _class_option(ctx, klass)
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8-sig", newline="") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
    name = "standard input" if file == "-" else Path(file).name
    now = utcnow()
    opts = Options(now, ctx.config.classes, klass, ctx.config.policy.soft_bounce_expiry)
    try:
        read = read_import(text, filename=name, fmt_name=fmt, opts=opts)
    except CsvFormatError as exc:
        fail(f"{file}: {exc}", 2)
    parsed = read.parsed
    click.echo(f"{file}: read as {read.source}", err=True)
    if read.note:
        click.echo(f"{file}: {read.note}", err=True)
    for problem in sorted([*parsed.errors, *parsed.skipped], key=lambda p: p.line):
        skipped = problem in parsed.skipped and not problem.message.endswith("skipped")
        click.echo(f"{file}: {problem}{': skipped' if skipped else ''}", err=True)

    async def go(store: Store) -> list[import_plan.PlannedRow]:
        held = await suppression_io.on_file(store, (e.address for e in parsed.entries), now)
        rows = import_plan.plan(parsed.entries, parsed.lines, held, now)
        if not dry_run:
            await suppression_io.merge_all(
                store, import_plan.to_write(rows), actor=actor(), action="import",
                detail=f"from {name}, {read.source}",
                source=Source.SES_LIST if read.from_ses_list else Source.IMPORT,
            )  # fmt: skip
        return rows

    rows: list[import_plan.PlannedRow] = []
    if parsed.entries:
        if dry_run and not ctx.has_state:
            rows = import_plan.plan(parsed.entries, parsed.lines, {}, now)  # a dry run creates nothing
        else:
            rows = with_store(ctx, go)
    if dry_run:
        for row in rows:
            click.echo(import_plan.describe(row, dry_run=True))
    tally = import_plan.counts(rows)
    new, raised, covered = (tally[o] for o in import_plan.Outcome)
    click.echo(
        f"{'would import' if dry_run else 'imported'} {new + raised} suppression(s); "
        f"{len(parsed.errors)} bad row(s), {len(parsed.skipped)} expired row(s) skipped; "
        f"{new} new, {raised} {'would raise' if dry_run else 'raised'}, {covered} already covered"
    )
    if parsed.errors:
        sys.exit(1)


@suppression_group.command("sync-ses")
@click.option("--pull", "direction", flag_value="pull", help="Add SES's account-level list to ours.")
@click.option("--push", "direction", flag_value="push", help="Put our all-class, never-expiring "
              "bounce and complaint entries on SES's account-level list.")  # fmt: skip
@click.option("--report", "direction", flag_value="report", help="Compare the two lists and print "
              "the addresses on one side only; change neither.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Read both lists and report; change neither.")
@click.option("--json", "as_json", is_flag=True, help="With --report: print JSON.")
@common_options
def suppression_sync_ses(ctx: Context, direction: str | None, dry_run: bool, as_json: bool) -> None:
    """Sync with SES's account-level suppression list (SESv2); never deletes on either side."""
    from relay.ops import ses_sync as sync
    from relay.ops import suppression_io

    if direction is None:
        fail("give --pull, --push or --report", 2)
    if as_json and direction != "report":
        fail("--json goes with --report", 2)
    reads_only = direction in ("push", "report") or dry_run  # our list is read, never written here
    if reads_only:
        require_store(ctx)
    endpoint = ctx.config.ses.endpoint_url or None
    ses = sync.SesSuppressionList(region=ctx.config.ses.region, endpoint_url=endpoint)
    try:
        at_ses = ses.list_all()
    except sync.SesSyncError as exc:
        fail(str(exc))
    now = utcnow()

    async def read_ours(store: Store) -> list[Suppression]:
        if direction == "pull":
            addresses = [a for a in (normalise_or_none(i.address) for i in at_ses) if a]
            return await store.suppressions_for(addresses, now)
        return await store.list_suppressions(now=now, klass=ALL if direction == "push" else None)

    ours = with_store(ctx, read_ours, create=not reads_only)
    if direction == "report":
        report = sync.reconcile(ours, at_ses, now)
        if as_json:
            emit_json(sync.report_json(report))
        else:
            click.echo("\n".join(sync.report_lines(report)))
        return
    if direction == "pull":
        pull = sync.plan_pull(at_ses, ours, now)
        for address, why in pull.invalid:
            click.echo(f"SES lists {address!r}, which is not a usable address ({why}): skipped", err=True)
        if not dry_run and pull.to_merge:
            detail = "SES account-level list"
            with_store(ctx, lambda store: suppression_io.merge_all(
                store, pull.to_merge, actor=actor(), action="sync-ses-pull", detail=detail,
                source=Source.SES_LIST,
            ))
        click.echo(
            f"SES lists {len(at_ses)} address(es): {'would add' if dry_run else 'added'} "
            f"{len(pull.new)} new, "
            f"{len(pull.known)} already suppressed here, {len(pull.invalid)} unusable"
        )
        return
    push = sync.plan_push(ours, sync.ses_index(at_ses), now)
    pushed = 0
    if not dry_run:
        for address, reason in push.to_put:
            try:
                ses.put(address, reason)
            except sync.SesSyncError as exc:
                click.echo(f"pushed {pushed} of {len(push.to_put)} before an error", err=True)
                fail(str(exc))
            pushed += 1
    click.echo(
        f"{'would put' if dry_run else 'put'} {len(push.to_put)} address(es) on SES's list; "
        f"{len(push.already)} already there, "
        f"{len(push.expiring)} skipped because they expire here (SES entries do not)"
    )


def normalise_or_none(address: str) -> str | None:
    try:
        return normalise(address)
    except AddressError:
        return None
