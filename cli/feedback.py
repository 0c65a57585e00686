"""`ses-relay feedback ...` and `ses-relay events list`: SES events in, and their log.

The worker consumes [feedback] queue_urls itself; these commands consume by hand,
replay saved events, serve the SNS HTTP endpoint, check signatures, and show what
could not be applied or needs a person.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from cli.app import Context, emit_rows, fail, main, stop_on_signals, with_store
from cli.options import address_argument, common_options, json_option, since_window
from cli.worker import sqs_sources
from relay import config as configuration
from relay.store import Store
from relay.timeutil import to_text, utcnow


@main.group("feedback")
def feedback_group() -> None:
    """Consume SES events (SNS -> SQS), replay saved ones, inspect what could not be applied."""


def _print_result(result: Any) -> None:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.kinds.items())) or "none"
    click.echo(
        f"applied {result.events} event(s) ({kinds}); {result.duplicates} duplicate(s), "
        f"{result.dead_letters} dead letter(s), {result.suppressions} suppression change(s), "
        f"{result.notices} notice(s) queued"
    )


@feedback_group.command("consume")
@click.option(
    "--queue-url",
    "queue_urls",
    multiple=True,
    help="SQS queue to read (repeatable); default [feedback] queue_urls.",
)
@click.option("--once", is_flag=True, help="Drain the queues and exit instead of long-polling forever.")
@common_options
def feedback_consume(ctx: Context, queue_urls: tuple[str, ...], once: bool) -> None:
    """Apply SES events from SQS: statuses, the events log, suppressions, notices."""
    from feedback.apply import BatchResult
    from feedback.ingest.consumer import consume

    urls = queue_urls or ctx.config.feedback.queue_urls
    if not urls:
        fail("no queue: give --queue-url or set [feedback] queue_urls", 2)

    async def go(store: Store) -> BatchResult:
        stop = asyncio.Event()
        if not once:
            stop_on_signals(stop)
        results = await asyncio.gather(
            *(consume(store, src, ctx.config, stop=stop, drain=once) for src in sqs_sources(ctx, urls))
        )
        total = BatchResult()
        for r in results:
            total.add(r)
        return total

    _print_result(with_store(ctx, go))


@feedback_group.command("replay")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@common_options
def feedback_replay(ctx: Context, files: tuple[Path, ...]) -> None:
    """Apply saved events from FILES (JSON or JSON Lines: SES events, SNS envelopes or SQS records)."""
    from feedback.ingest.replay import replay

    _print_result(with_store(ctx, lambda store: replay(store, list(files), ctx.config)))


@feedback_group.command("dead-letters")
@json_option
@common_options
def feedback_dead_letters(ctx: Context, as_json: bool) -> None:
    """Queue messages that could not be parsed, with the error."""
    items = with_store(ctx, lambda store: store.dead_letters(), create=False)
    emit_rows(items, as_json, as_dict=_dead_letter_json, line=_dead_letter_line, empty="no dead letters")


def _dead_letter_json(d: Any) -> dict[str, Any]:
    return {"id": d.id, "received_at": to_text(d.received_at), "source": d.source, "error": d.error,
            "body": d.body}  # fmt: skip


def _dead_letter_line(d: Any) -> str:
    return f"#{d.id} {to_text(d.received_at)} {d.source}: {d.error}"


@feedback_group.command("review")
@json_option
@common_options
def feedback_review(ctx: Context, as_json: bool) -> None:
    """Events that need a person: undetermined bounces, sender-at-fault rejections."""
    items = with_store(ctx, lambda store: store.review_items(), create=False)
    emit_rows(items, as_json, as_dict=_review_json, line=_review_line, empty="nothing to review")


def _review_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "created_at": to_text(r.created_at), "recipient": r.recipient, "class": r.klass,
            "reason": r.reason, "ses_message_id": r.ses_message_id}  # fmt: skip


def _review_line(r: Any) -> str:
    return f"#{r.id} {to_text(r.created_at)} {r.recipient or '-'} [{r.klass or '*'}]: {r.reason}"


@feedback_group.command("http")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default="127.0.0.1:8080",
    show_default=True,
    help="Where SNS (or the TLS proxy in front) delivers.",
)
@click.option("--tls", is_flag=True, help="Serve HTTPS with [tls] cert_file and key_file.")
@common_options
def feedback_http(ctx: Context, listen: str, tls: bool) -> None:
    """Receive SES events from SNS HTTP(S) subscriptions: verify each signature, then apply them.

    Only topics in [feedback] sns_topic_arns are accepted (and their subscriptions
    confirmed); anything unsigned, forged or for another topic gets 403 and changes
    nothing. Certificates are read from [feedback] sns_cert_dir first.
    """
    from feedback.ingest.sns_http import run_sns_http, tls_context

    try:
        host, port = configuration.parse_hostport(listen)
    except ValueError as exc:
        fail(f"--listen: {exc}", 2)
    ssl_context = None
    if tls:
        if not (ctx.config.tls.cert_file and ctx.config.tls.key_file):
            fail("--tls needs [tls] cert_file and key_file", 2)
        try:
            ssl_context = tls_context(ctx.config.tls.cert_file, ctx.config.tls.key_file)
        except (OSError, ValueError) as exc:
            fail(f"configuration error: [tls] cert_file/key_file: {exc}", 2)

    async def go(store: Store) -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_sns_http(
            store, ctx.config, host, port, stop=stop, ssl_context=ssl_context, announce=click.echo
        )

    try:
        with_store(ctx, go)
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc}")


@feedback_group.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="PEM files named as the SigningCertURL's last path part [default: [feedback] sns_cert_dir].",
)
@click.option("--no-fetch", is_flag=True, help="Never download certificates; use only the cert dir.")
@common_options
def feedback_verify(ctx: Context, files: tuple[Path, ...], cert_dir: Path | None, no_fetch: bool) -> None:
    """Check saved SNS messages' signatures and certificate URLs: one line per file, exit 1 if any fails.

    A file may hold an SNS envelope, an SQS record or a Lambda SNS event, one JSON
    document or JSON Lines. The topic allow list is not checked (that is the
    endpoint's business).
    """
    from feedback.ingest.sns_certs import fetch_https
    from feedback.ingest.sns_verify import SnsVerifier, check_file

    directory = cert_dir
    if directory is None and ctx.config.feedback.sns_cert_dir:
        directory = Path(ctx.config.feedback.sns_cert_dir)
    verifier = SnsVerifier(cert_dir=directory, fetch=None if no_fetch else fetch_https)
    failed = 0
    for path in files:
        why = check_file(path, verifier)
        click.echo(f"{path}: {why or 'verified'}")
        failed += why is not None
    if failed:
        sys.exit(1)


# -- events ------------------------------------------------------------------------------


@main.group("events")
def events_group() -> None:
    """The feedback log: every SES event received, per recipient."""


@events_group.command("list")
@click.option("--address", help="Only events for this recipient.")
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option
@common_options
def events_list(ctx: Context, address: str | None, since: str, limit: int, as_json: bool) -> None:
    """List logged SES events, oldest first."""
    window = since_window(since)
    addr = address_argument(address) if address else None
    rows = with_store(
        ctx, lambda store: store.events(address=addr, since=utcnow() - window, limit=limit), create=False
    )
    emit_rows(rows, as_json, as_dict=_event_json, line=_event_line, empty="no events")


def _event_json(e: Any) -> dict[str, Any]:
    r = e.record
    return {
        "id": e.id,
        "time": to_text(r.occurred_at),
        "received_at": to_text(e.received_at),
        "kind": r.kind,
        "recipient": r.recipient,
        "ses_message_id": r.ses_message_id,
        "submission_id": r.submission_id,
        "class": r.klass,
        "bounce_type": r.bounce_type,
        "bounce_subtype": r.bounce_subtype,
        "diagnostic": r.diagnostic,
        "status": r.status,
        "complaint_type": r.complaint_type,
        "source_ip": r.source_ip,
        "from_address": r.from_address,
        "subject": r.subject,
    }


def _event_line(e: Any) -> str:
    r = e.record
    what = "/".join(p for p in (r.bounce_type, r.bounce_subtype) if p) or r.complaint_type or ""
    return f"{to_text(r.occurred_at)} {r.kind:<17} {r.recipient or '-'} {what} {r.diagnostic or ''}"
