"""`ses-relay class ...`: message classes, and pausing them by hand."""

from __future__ import annotations

from typing import Any

import click

from cli.app import Context, actor, emit_json, fail, main, with_store
from cli.options import common_options, json_option
from relay.timeutil import to_text, utcnow


@main.group("class")
def class_group() -> None:
    """Show, pause and resume message classes (the reputation guard pauses them too)."""


def _known_class(ctx: Context, klass: str) -> str:
    if klass not in ctx.config.classes:
        fail(f"unknown class {klass!r}; configured: {', '.join(sorted(ctx.config.classes))}", 2)
    return klass


@class_group.command("status")
@json_option
@common_options
def class_status(ctx: Context, as_json: bool) -> None:
    """Each class, its configuration set, and whether it is paused (and why)."""
    states = with_store(ctx, lambda store: store.class_states(), create=False)
    rows: list[dict[str, Any]] = []
    for name, conf in ctx.config.classes.items():
        state = states.get(name)
        rows.append(
            {
                "class": name,
                "configuration_set": conf.configuration_set,
                "paused": bool(state and state.paused),
                "reason": state.reason if state else "",
                "changed_at": to_text(state.changed_at) if state else None,
                "changed_by": state.changed_by if state else None,
            }
        )
    if as_json:
        emit_json(rows)
        return
    from relay.ops.guard import paused_by

    for r in rows:
        status = "open"
        if r["paused"]:
            reason = f": {r['reason']}" if r["reason"] else ""
            status = f"PAUSED: paused by {paused_by(r['changed_by'])} since {r['changed_at']}{reason}"
        click.echo(f"{r['class']:<14} set={r['configuration_set'] or '-':<10} {status}")


def _set_paused(ctx: Context, klass: str, paused: bool, reason: str) -> None:
    with_store(
        ctx, lambda store: store.set_class_paused(klass, paused, reason=reason, actor=actor(), now=utcnow())
    )


@class_group.command("pause")
@click.argument("klass", metavar="CLASS")
@click.option("--reason", default="", help="Why; shown in the 451 reply and by `class status`.")
@common_options
def class_pause(ctx: Context, klass: str, reason: str) -> None:
    """Pause CLASS: its new mail is refused with 451 4.7.1 (or held, per [guard] action).

    The pause reads "paused by" the CLI user, as the audit log names them.
    """
    _set_paused(ctx, _known_class(ctx, klass), True, reason)
    click.echo(f"class {klass} paused by {actor()}")


@class_group.command("resume")
@click.argument("klass", metavar="CLASS")
@click.option("--reason", default="resumed by admin", show_default=True)
@common_options
def class_resume(ctx: Context, klass: str, reason: str) -> None:
    """Resume CLASS; the guard counts its rates afresh from now."""
    _set_paused(ctx, _known_class(ctx, klass), False, reason)
    click.echo(f"class {klass} resumed")
