"""What every command shares: the root context (settings and runtime loaded on first use),
the actor for the audit log, and turning database and bridge errors into clear messages."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from bridge.config import Settings, load_config
from bridge.errors import BridgeError, ConfigError
from bridge.logging import escape_text
from bridge.runtime import Runtime


class Context:
    """Loads settings (and the runtime, or the app) only when a command needs them."""

    def __init__(self, config: str | None, origin: str = "") -> None:
        self.config = config
        #: Why this file (see bridge.config.choose_config), for `--version` and the logs.
        self.origin = origin
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        """The validated config, read on first use."""
        if self._settings is None:
            try:
                self._settings = load_config(self.config, origin=self.origin or None)
            except ConfigError as exc:
                raise click.ClickException(exc.message) from None
        return self._settings

    def runtime(self) -> Runtime:
        """Database and mail-server handle for this command, closed when it ends."""
        if self._runtime is None:
            rt = Runtime.build(self.settings)
            context = click.get_current_context(silent=True)
            if context is not None:
                context.find_root().call_on_close(rt.dispose)
                context.find_root().call_on_close(rt.mailserver.http.close)
            self._runtime = rt
        return self._runtime

    def app(self) -> Any:
        """The web app (for `bridge run`)."""
        from bridge.app import create_app

        return create_app(self.settings)


pass_ctx = click.make_pass_decorator(Context)


def root() -> Context:
    """The `bridge` group's Context, from inside any command."""
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, Context)
    return obj


def actor() -> Any:
    """The person at this terminal, for the audit log: `cli:<OS user>`."""
    from bridge.support.actions import Actor

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}", "cli")


@contextmanager
def database() -> Iterator[None]:
    """Turn a missing table, an unreachable database or a refused action into a clear message."""
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "no such table" in text or "does not exist" in text:
            raise click.ClickException(
                "the database schema is not up to date: run `bridge db upgrade`"
            ) from None
        raise click.ClickException(f"database error: {text.splitlines()[0]}") from None
    except BridgeError as exc:
        raise click.ClickException(f"{exc.reason}: {exc.message}") from None


def clean(value: Any) -> str:
    """A value from outside (billing, the login form, the mail server) safe to print: its
    control characters escaped, so it stays on its line and cannot steer the terminal."""
    return escape_text(str(value))


def or_fail(call: Any) -> Any:
    """Run `call`; a BridgeError becomes a one-line message and exit status 1."""
    try:
        return call()
    except BridgeError as exc:
        raise click.ClickException(f"{exc.reason}: {exc.message}") from None


def table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """A titled table, columns aligned, every cell through clean()."""
    click.secho(title, bold=True)
    if not rows:
        click.echo("  (none)\n")
        return
    cells = [[clean(v) for v in row] for row in (header, *rows)]
    widths = [max(len(x) for x in col) for col in zip(*cells, strict=False)]
    for row in cells:
        click.echo(
            ("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False))).rstrip()
        )
    click.echo()
