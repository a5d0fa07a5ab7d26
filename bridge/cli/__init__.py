"""The `bridge` command, assembled from one module per command group.

base.py holds what they share (the lazily loaded settings and runtime, the audit actor, error
messages); each other module defines one group or command and is added here, nowhere else.
"""

from __future__ import annotations

import click

from bridge.cli import (
    checkserver,
    configuration,
    events,
    hooks,
    importing,
    mappings,
    server,
    services,
    staff,
)
from bridge.cli.base import Context
from bridge.config import choose_config


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mailbridge")
    except PackageNotFoundError:
        return "(not installed)"


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    envvar="BRIDGE_CONFIG",
    metavar="PATH",
    help="Config file (default: $BRIDGE_CONFIG, else config.yaml, else config.example.yaml).",
)
@click.option(
    "--version", is_flag=True, help="Print the version and which config file is used, then exit."
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, version: bool) -> None:
    """Mail provisioning bridge: billing webhooks in, a matching NMS mail server out."""
    from click.core import ParameterSource

    if config:
        given = ctx.get_parameter_source("config") is not ParameterSource.ENVIRONMENT
        ctx.obj = Context(config, "named by --config" if given else "named by BRIDGE_CONFIG")
    else:
        path, origin = choose_config()
        ctx.obj = Context(str(path), origin)
    if version:
        from pathlib import Path

        missing = "" if Path(ctx.obj.config).is_file() else ", not found"
        click.echo(f"bridge {_version()}")
        click.echo(f"config: {ctx.obj.config} ({ctx.obj.origin}{missing})")
        ctx.exit()
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit()


for command in (
    server.run,
    server.worker,
    server.db,
    mappings.mappings,
    hooks.hooks,
    services.reconcile,
    services.services,
    importing.import_,
    staff.staff,
    events.events,
    checkserver.check_server,
    configuration.config,
    configuration.check_ports,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
