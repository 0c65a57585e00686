"""`ses-relay setup-aws`: the SES, SNS and SQS resources each class needs, and the config for them."""

from __future__ import annotations

from pathlib import Path

import click

from cli.app import Context, fail, main
from cli.options import common_options
from relay import config as configuration
from relay.config import ConfigError


@main.command("setup-aws")
@click.option("--prefix", default="ses-relay", show_default=True, help="Start of every resource name.")
@click.option(
    "--ses-api",
    type=click.Choice(["v2", "v1"]),
    default="v2",
    show_default=True,
    help="SES API for configuration sets; v1 cannot publish DeliveryDelay and Subscription events.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--write-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the resulting config to FILE (an existing FILE is kept as FILE.bak) instead of printing it.",
)
@common_options
def setup_aws(ctx: Context, prefix: str, ses_api: str, dry_run: bool, write_config: Path | None) -> None:
    """Create each class's SES configuration set, event destination, SNS topic, SQS queue and
    dead-letter queue, queue policy and subscription. Idempotent; never deletes.

    Prints what it created and what already existed, then the configuration with
    the queue URLs in [feedback] (the whole output is valid TOML).
    """
    from relay.ops import setup_aws as aws
    from relay.ops.config_toml import config_data, dumps

    try:
        names = aws.class_names(ctx.config, prefix)
    except ValueError as exc:
        fail(str(exc), 2)
    region, endpoint = ctx.config.ses.region, ctx.config.ses.endpoint_url or None
    plain = dry_run or write_config is not None

    def say(line: str) -> None:
        click.echo(line if plain else f"# {line}")

    try:
        clients = aws.Clients.create(region=region, endpoint_url=endpoint, api=ses_api)  # type: ignore[arg-type]
        account = aws.account_of(clients, region)
        existing = aws.discover(clients, names)
        steps = aws.plan(names, existing, account, api=ses_api, prefix=prefix)  # type: ignore[arg-type]
        if dry_run:
            for step in steps:
                say(step.line())
        else:
            outcome = aws.execute(steps, clients, existing, report=say)
    except aws.SetupError as exc:
        fail(str(exc))
    counts = {a: sum(1 for s in steps if s.action == a) for a in ("create", "update", "exists", "differs")}
    tense = ("to create", "to update") if dry_run else ("created", "updated")
    say(
        f"{counts['create']} {tense[0]}, {counts['update']} {tense[1]}, {counts['exists']} already existed, "
        f"{counts['differs']} differ (left alone) in {account.region} for account {account.account_id}"
    )
    if dry_run:
        say("dry run: nothing was changed; run without --dry-run to get the config with the queue URLs")
        return
    urls = aws.queue_urls(names, existing, outcome.created_queues)
    data = aws.updated_config(config_data(ctx.config), names, urls, region)
    try:
        configuration.from_dict(data)
    except ConfigError as exc:  # a bug here, not the operator's: say so plainly
        fail(f"the resulting configuration does not validate: {exc}")
    text = "# ses-relay configuration written by `ses-relay setup-aws`\n" + dumps(data)
    if write_config is None:
        click.echo("")
        click.echo(text, nl=False)
        return
    try:
        if write_config.exists():
            write_config.with_name(write_config.name + ".bak").write_bytes(write_config.read_bytes())
        tmp = write_config.with_name(write_config.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(write_config)
    except OSError as exc:
        fail(f"cannot write {write_config}: {exc.strerror}")
    click.echo(f"wrote {write_config}")
