"""The `bridge` command, assembled from one module per command group.

base.py holds what they share (the lazily loaded settings and runtime, the audit actor, error
messages); each other module defines one group or command and is added here, nowhere else.
"""

from __future__ import annotations

import click

from bridge.cli import (
    checkserver,
    events,
    hooks,
    importing,
    mappings,
    server,
    services,
    staff,
)
from bridge.cli.base import Context
from bridge.config import config_path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    envvar="BRIDGE_CONFIG",
    metavar="PATH",
    help="Config file (default: $BRIDGE_CONFIG, else config.yaml, else config.example.yaml).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Mail provisioning bridge: billing webhooks in, a matching NMS mail server out."""
    ctx.obj = Context(config or str(config_path()))


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
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
