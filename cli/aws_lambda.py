"""`ses-relay lambda package`: the feedback consumer as an AWS Lambda function, ready to deploy."""

from __future__ import annotations

from pathlib import Path

import click

from cli.app import Context, fail, main
from cli.options import common_options


@main.group("lambda")
def lambda_group() -> None:
    """The feedback consumer as an AWS Lambda function with an SQS trigger (deploy/template.yaml)."""


@lambda_group.command("package")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the zip (e.g. build/ses-relay-lambda.zip); replaced once complete.",
)
@click.option(
    "--arch",
    type=click.Choice(["x86_64", "arm64"]),
    default="x86_64",
    show_default=True,
    help="The function's architecture.",
)
@click.option(
    "--python",
    "python_version",
    type=click.Choice(["3.11", "3.12", "3.13"]),
    default="3.12",
    show_default=True,
    help="The function's runtime: python3.11, python3.12 or python3.13.",
)
@click.option(
    "--include-config",
    is_flag=True,
    help="Put the config file (--config) in the zip as ses-relay.toml: the function then decides "
    "with your [policy] and [classes]. Refused if its [state] url has a password.",
)
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Take the dependencies from the wheels in this folder only (pip --no-index --find-links): "
    "for a build machine without a package index.",
)
@common_options
def lambda_package(
    ctx: Context, out: Path, arch: str, python_version: str, include_config: bool, wheels: Path | None
) -> None:
    """Build the deployment zip: ses-relay's relay/ and feedback/ packages and the handler's
    dependencies as manylinux wheels for the runtime (pip downloads them from your package
    index, or takes them from --wheels).

    Handler: feedback.lambda_handler.handler. The function reads SES_RELAY_STATE_URL and,
    optionally, SES_RELAY_CONFIG (see README, "Feedback in AWS Lambda").
    """
    from relay.ops import lambda_package

    if include_config and ctx.config_file is None:
        fail("--include-config needs a config file: give --config FILE or set SES_RELAY_CONFIG", 2)
    config = ctx.config_file if include_config else None
    click.echo(f"installing the dependencies for python{python_version} on {arch} with pip...", err=True)
    try:
        built = lambda_package.build(out, arch=arch, python=python_version, config=config, wheels=wheels)
    except lambda_package.PackageError as exc:
        fail(str(exc))
    click.echo(
        f"wrote {built.path} ({built.size / 1e6:.1f} MB, {built.files} files) for {built.runtime} on "
        f"{built.arch}; handler {lambda_package.HANDLER}"
    )
    click.echo(f"dependencies: {', '.join(built.distributions)}")
    if config is not None:
        click.echo(f"config: {config} as {lambda_package.CONFIG_NAME}")
    if not built.compiled:
        click.echo(f"no bytecode: this Python is not {built.runtime}, so cold starts compile the modules")
