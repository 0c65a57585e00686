"""`ses-relay report` and `ses-relay stats`: what happened to the mail, and how SES sees it."""

from __future__ import annotations

from pathlib import Path

import click

from cli.app import Context, emit_json, fail, main, with_store
from cli.options import common_options, json_option, since_window
from relay.timeutil import utcnow


@main.command("report")
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained page (summary, chart per hour, every row) to FILE.",
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as CSV."
)
@click.option(
    "--xlsx", "xlsx_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write a spreadsheet: sheet Events (the rows) and sheet Summary.",
)
@click.option(
    "--publish", is_flag=True,
    help="Upload the page and the spreadsheet to [report] s3_uri and print a link to the page.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary, rows and hourly counts as JSON.")
@common_options
def report_command(
    ctx: Context, since: str, html_path: Path | None, csv_path: Path | None, xlsx_path: Path | None,
    publish: bool, as_json: bool,
) -> None:  # fmt: skip
    """Every bounce and complaint in the window, with source IP and From address, and a summary.

    With no file option and no --publish, prints the summary.
    """
    from feedback.reports import publish as publishing
    from feedback.reports import report as reports

    if publish and not ctx.config.report.s3_uri:
        fail(f"--publish: {publishing.NOT_CONFIGURED}", 2)
    window = since_window(since)
    if window.total_seconds() <= 0:
        fail("--since: the window must be longer than zero", 2)
    until = utcnow()
    built = with_store(
        ctx, lambda store: reports.collect(store, since=until - window, until=until), create=False
    )
    writers = reports.file_writers(html_path, csv_path, xlsx_path)
    for path, write in writers:
        try:
            write(built, path)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
        if not as_json:
            click.echo(f"wrote {path} ({len(built.rows)} row(s))")
    published = None
    if publish:
        try:
            published = publishing.S3Publisher.from_config(ctx.config).publish(built, now=until)
        except publishing.PublishError as exc:
            fail(f"cannot publish: {exc}")
        if published.temporary_credentials:
            click.echo(f"warning: {publishing.TEMPORARY_CREDENTIALS}", err=True)
    if as_json:
        emit_json({**reports.as_json(built), **({"published": published.as_json()} if published else {})})
    elif published is not None:
        click.echo("\n".join(published.lines()))
    elif not writers:
        click.echo(reports.summary_text(built))


@main.command("stats")
@click.option("--since", default="24h", show_default=True, help="Window: e.g. 1h, 24h, 7d.")
@json_option
@common_options
def stats(ctx: Context, since: str, as_json: bool) -> None:
    """Sends, deliveries, bounces and complaints per class, with SES's review and pause thresholds."""
    from relay.ops.stats import SES_PAUSE, SES_REVIEW, standing, summarise

    window = since_window(since)
    counts = with_store(ctx, lambda store: store.outcome_counts(utcnow() - window), create=False)
    overall, classes = summarise(counts)
    if as_json:
        emit_json(
            {
                "since": since,
                "overall": overall.as_dict(),
                "classes": {k: c.as_dict() for k, c in classes.items()},
                "thresholds": {"review": SES_REVIEW, "pause": SES_PAUSE},
            }
        )
        return
    click.echo(
        f"last {since}; SES reviews at bounce {SES_REVIEW['bounce_rate']:.0%} / complaint "
        f"{SES_REVIEW['complaint_rate']:.1%}, may pause at {SES_PAUSE['bounce_rate']:.0%} / "
        f"{SES_PAUSE['complaint_rate']:.1%}"
    )
    header = f"{'class':<14}{'sent':>8}{'deliv':>8}{'bounce':>8}{'perm':>6}{'compl':>7}{'rej':>5}"
    click.echo(f"{header}{'bounce%':>9}{'compl%':>9}  standing")
    for name, c in [("overall", overall), *classes.items()]:
        click.echo(
            f"{name:<14}{c.sent:>8}{c.delivered:>8}{c.bounced:>8}{c.bounced_permanent:>6}{c.complained:>7}"
            f"{c.rejected:>5}{c.bounce_rate:>9.2%}{c.complaint_rate:>9.3%}  {standing(c)}"
        )
