"""`ses-relay user ...`: the SMTP AUTH users file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.app import Context, emit_json, fail, main, require_store
from cli.options import common_options, json_option


@main.group("user")
def user_group() -> None:
    """SMTP AUTH users: [auth] users_file (default <data-dir>/users.json), scrypt hashes only."""


def _users_file(ctx: Context) -> Path:
    from relay.intake.users import users_path

    return users_path(ctx.config.auth.users_file, ctx.data_dir)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


@user_group.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option(
    "--sender",
    "senders",
    multiple=True,
    help="An address, @domain, or '*' this user may send as (MAIL FROM and From:); repeatable, needed.",
)
@click.option("--default-class", help="Class for this user's mail when no header names one.")
@click.option(
    "--rate", type=click.IntRange(min=0), default=0, show_default=True, help="Messages a minute; 0: no limit."
)
@click.option("--may-set-arns", is_flag=True, help="Honour the X-SES-*-ARN headers this user sends.")
@click.option("--replace", is_flag=True, help="Replace an existing user (password and rules).")
@common_options
def user_add(
    ctx: Context,
    name: str,
    password_stdin: bool,
    senders: tuple[str, ...],
    default_class: str | None,
    rate: int,
    may_set_arns: bool,
    replace: bool,
) -> None:
    """Add user NAME; prompts for the password twice unless --password-stdin."""
    from relay.intake.users import (
        User,
        UsersFileError,
        check_name,
        editing,
        hash_password,
        normalise_sender_rule,
    )

    try:
        check_name(name)
        rules = tuple(dict.fromkeys(normalise_sender_rule(s) for s in senders))
    except UsersFileError as exc:
        fail(str(exc), 2)
    if not rules:
        fail("give at least one --sender: an address, @domain, or '*' for any sender", 2)
    if default_class is not None and default_class not in ctx.config.classes:
        names = ", ".join(sorted(ctx.config.classes))
        fail(f"--default-class: unknown class {default_class!r}; configured: {names}", 2)
    path = _users_file(ctx)
    try:
        with editing(path, ctx.config.classes) as users:
            if name in users.users and not replace:
                fail(f"user {name!r} already exists in {path} (use --replace to change it)")
            password = _read_password(password_stdin)
            users.users[name] = User(name, hash_password(password), rules, default_class, rate, may_set_arns)
    except UsersFileError as exc:
        fail(str(exc), 2)
    click.echo(f"{'replaced' if replace else 'added'} user {name} in {path}")


@user_group.command("list")
@json_option
@common_options
def user_list(ctx: Context, as_json: bool) -> None:
    """List users and their rules (never the hashes)."""
    from relay.intake.users import UsersFileError, load_users

    if not ctx.config.auth.users_file and not ctx.data_dir.is_dir():
        require_store(ctx)  # the users file would be in a data dir that is not there
    try:
        users = load_users(_users_file(ctx), ctx.config.classes).users
    except UsersFileError as exc:
        fail(str(exc), 2)
    rows = [
        {
            "name": u.name,
            "senders": list(u.senders),
            "default_class": u.default_class,
            "rate_per_minute": u.rate_per_minute,
            "may_set_arns": u.may_set_arns,
        }
        for u in sorted(users.values(), key=lambda u: u.name)
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no users")
    for r in rows:
        rate = f"{r['rate_per_minute']}/min" if r["rate_per_minute"] else "no rate limit"
        extra = ", may set ARNs" if r["may_set_arns"] else ""
        click.echo(f"{r['name']}\t{' '.join(r['senders'])}\tclass={r['default_class'] or '-'}\t{rate}{extra}")


@user_group.command("remove")
@click.argument("name")
@common_options
def user_remove(ctx: Context, name: str) -> None:
    """Remove user NAME (a relay that is running notices within one AUTH)."""
    from relay.intake.users import UsersFileError, editing

    path = _users_file(ctx)
    try:
        with editing(path, ctx.config.classes) as users:
            if users.users.pop(name, None) is None:
                fail(f"no user {name!r} in {path}")
    except UsersFileError as exc:
        fail(str(exc), 2)
    click.echo(f"removed user {name} from {path}")
