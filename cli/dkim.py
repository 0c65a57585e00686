"""`ses-relay dkim keygen`: a signing key under the data dir and the DNS record to publish."""

from __future__ import annotations

import click

from cli.app import Context, fail, main
from cli.options import common_options


@main.group("dkim")
def dkim_group() -> None:
    """DKIM keys for signing before SES."""


@dkim_group.command("keygen")
@click.argument("domain")
@click.option("--selector", required=True, help="DKIM selector (the DNS name's first label).")
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key for this domain and selector.")
@common_options
def dkim_keygen(ctx: Context, domain: str, selector: str, bits: int, force: bool) -> None:
    """Make a key for DOMAIN under the data dir and print the DNS TXT record to publish."""
    from relay.sending import dkim as dkim_mod

    try:
        info = dkim_mod.keygen(ctx.data_dir, domain, selector, bits=bits, force=force)
    except (FileExistsError, ValueError, dkim_mod.DkimError) as exc:
        fail(str(exc))
    click.echo(f"private key: {info.path}")
    click.echo("publish this DNS TXT record:")
    click.echo(info.zone_line())
