"""`bridge config show`: which config file every entry point reads, and what it says (secrets
masked); `bridge check-ports`: the free-port check `make run` does before it starts anything."""

from __future__ import annotations

import json
import socket

import click
import yaml

from bridge.cli.base import Context, pass_ctx
from bridge.config import describe, masked


@click.group()
def config() -> None:
    """The config file in use."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def config_show(ctx: Context, as_json: bool) -> None:
    """Print which file is used and why, then its settings as loaded, secrets masked.

    Every entry point (this command, `make run`, gunicorn, `bridge worker`) reads
    $BRIDGE_CONFIG, else config.yaml in the working directory, else config.example.yaml.
    """
    settings = ctx.settings
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": settings.path,
                    "origin": settings.origin,
                    "settings": masked(settings),
                },
                indent=2,
            )
        )
        return
    click.echo(f"# {describe(settings)}")
    click.echo(yaml.safe_dump(masked(settings), sort_keys=False).rstrip())


def _taken(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port (a server would fail to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _port(name: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise click.ClickException(f"{name}={value} is not a port number (1-65535)")
    return int(value)


@click.command("check-ports", hidden=True)
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=PORT...")
def check_ports(assignments: tuple[str, ...]) -> None:
    """Exit 1 with a sentence naming the variable to change when a port is taken.

    `make run` calls it before it starts anything:
    `bridge check-ports BRIDGE_PORT=8000 NMSIM_PORT=8025`.
    """
    ports: dict[str, int] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise click.UsageError(f"{assignment!r}: use NAME=PORT")
        ports[name] = _port(name, value)
    names = list(ports)
    for i, name in enumerate(names):
        for other in names[i + 1 :]:
            if ports[name] == ports[other]:
                raise click.ClickException(
                    f"{name} and {other} are both {ports[name]}; give them different values, "
                    f"e.g. make run {other}={_suggest(ports[other], set(ports.values()))}"
                )
    for name, port in ports.items():
        if _taken(port):
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is already in use (another make run?), so nothing "
                f"was started; stop that program or choose another port with {name}, e.g. "
                f"make run {name}={_suggest(port, set(ports.values()))}"
            )


def _suggest(port: int, avoid: set[int]) -> int:
    """A nearby free port to offer in the message."""
    for candidate in range(port + 1, min(port + 200, 65536)):
        if candidate not in avoid and not _taken(candidate):
            return candidate
    return port + 1
