"""`ses-relay notices list`: what the relay has told, or will tell, senders."""

from __future__ import annotations

from typing import Any

import click

from cli.app import Context, emit_rows, main, with_store
from cli.options import common_options, json_option
from relay.timeutil import maybe_text, to_text


@main.group("notices")
def notices_group() -> None:
    """Notices to senders about mail that did not reach a recipient."""


@notices_group.command("list")
@click.option("--pending", is_flag=True, help="Only notices not delivered yet.")
@json_option
@common_options
def notices_list(ctx: Context, pending: bool, as_json: bool) -> None:
    """List notices: pending (retried with backoff), sent, skipped (and why) or failed."""
    rows = with_store(ctx, lambda store: store.notices(pending_only=pending), create=False)
    emit_rows(rows, as_json, as_dict=_notice_json, line=_notice_line, empty="no notices")


def _notice_json(n: Any) -> dict[str, Any]:
    return {
        "id": n.id,
        "state": n.state,
        "reason": n.record.reason,
        "sender": n.record.sender,
        "recipient": n.record.recipient,
        "submission_id": n.record.submission_id,
        "created_at": to_text(n.created_at),
        "attempts": n.attempts,
        "next_attempt_at": to_text(n.next_attempt_at),
        "last_error": n.last_error,
        "delivered_at": maybe_text(n.delivered_at),
    }


def _notice_line(n: Any) -> str:
    error = f" ({n.last_error})" if n.last_error else ""
    rec = n.record
    return f"#{n.id} {n.state:<8} {rec.reason:<24} to <{rec.sender}> about {rec.recipient}{error}"
