"""`ses-relay submission ...`: accepted messages and where each recipient stands."""

from __future__ import annotations

from typing import Any

import click

from cli.app import Context, emit_json, fail, main, with_store
from cli.options import address_argument, common_options, json_option, since_window
from relay.timeutil import to_text, utcnow
from relay.vocabulary import Status

RECIPIENT_STATUSES = tuple(s.value for s in Status)  # plain text: click matches Enum choices by name


@main.group("submission")
def submission_group() -> None:
    """Inspect accepted messages."""


def submission_json(sub: Any) -> dict[str, Any]:
    return {
        "id": sub.id,
        "mail_from": sub.mail_from,
        "class": sub.klass,
        "class_source": sub.class_source,
        "configuration_set": sub.configuration_set,
        "subject": sub.subject,
        "message_id": sub.message_id,
        "size": sub.size,
        "created_at": to_text(sub.created_at),
        "auth_user": sub.auth_user,
        "client_ip": sub.client_ip,
        "recipients": [
            {
                "address": r.address,
                "status": r.status,
                "detail": r.detail,
                "ses_message_id": r.ses_message_id,
                "updated_at": to_text(r.updated_at),
            }
            for r in sub.recipients
        ],
    }


@submission_group.command("show")
@click.argument("submission_id")
@json_option
@common_options
def submission_show(ctx: Context, submission_id: str, as_json: bool) -> None:
    """Show a submission and the status of each recipient."""
    sub = with_store(ctx, lambda store: store.submission(submission_id), create=False)
    if sub is None:
        fail(f"no submission {submission_id!r}")
    if as_json:
        emit_json(submission_json(sub))
        return
    click.echo(f"submission {sub.id}  from <{sub.mail_from}>  class {sub.klass} ({sub.class_source})")
    via = f"user {sub.auth_user}" if sub.auth_user else "no AUTH"
    click.echo(f"  created {to_text(sub.created_at)} from {sub.client_ip or 'the relay itself'} ({via})")
    click.echo(f"  {sub.size} bytes, subject: {sub.subject or '-'}")
    for r in sub.recipients:
        extra = f"  {r.ses_message_id}" if r.ses_message_id else ""
        detail = f"  ({r.detail})" if r.detail else ""
        click.echo(f"  {r.address}: {r.status}{extra}{detail}")


@submission_group.command("list")
@click.option("--sender", help="Only mail from this envelope sender (MAIL FROM).")
@click.option(
    "--status",
    type=click.Choice(RECIPIENT_STATUSES),
    help="Only submissions with at least one recipient in this status.",
)
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 30m, 24h, 7d.")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (each as `submission show --json`).")
@common_options
def submission_list(
    ctx: Context, sender: str | None, status: str | None, since: str, limit: int, as_json: bool
) -> None:
    """Recent submissions, newest first, with their recipients' statuses."""
    window = since_window(since)
    addr = address_argument(sender) if sender else None
    subs = with_store(
        ctx,
        lambda store: store.recent_submissions(utcnow() - window, sender=addr, status=status, limit=limit),
        create=False,
    )
    if as_json:
        emit_json([submission_json(sub) for sub in subs])
        return
    if not subs:
        click.echo(f"no submissions in the last {since}")
    for sub in subs:
        counts: dict[str, int] = {}
        for r in sub.recipients:
            counts[r.status] = counts.get(r.status, 0) + 1
        statuses = ", ".join(f"{n} {name}" for name, n in counts.items())
        click.echo(
            f"{sub.id}  {to_text(sub.created_at)}  <{sub.mail_from}>  {sub.klass}  [{statuses}]  "
            f"{sub.subject or '-'}"
        )
