"""`bridge run`, `bridge worker` and `bridge db ...`: serving, reconciling, the schema."""

from __future__ import annotations

import logging
import sys

import click

from bridge.cli.base import Context, pass_ctx
from bridge.runtime import Runtime


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@pass_ctx
def run(ctx: Context, host: str, port: int) -> None:
    """Serve the bridge with the development server (use gunicorn in production)."""
    from bridge.config import describe

    app = ctx.app()
    logging.getLogger("bridge.app").info("%s", describe(ctx.settings))
    app.run(host=host, port=port, threaded=True)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
def db_upgrade(ctx: Context, revision: str) -> None:
    """Create or migrate the database schema to the newest version."""
    from bridge import migrate
    from bridge.db import make_engine

    engine = make_engine(ctx.settings.database_url)
    _ensure_sqlite_dir(ctx.settings.database_url)
    migrate.upgrade(engine, revision)
    current, head = migrate.current_and_head(engine)
    engine.dispose()
    click.echo(f"database at revision {current} (newest: {head})")


@db.command("current")
@pass_ctx
def db_current(ctx: Context) -> None:
    """Show the database's schema revision and the newest one."""
    from sqlalchemy.exc import OperationalError

    from bridge import migrate
    from bridge.db import make_engine

    engine = make_engine(ctx.settings.database_url)
    try:
        current, head = migrate.current_and_head(engine)
    except OperationalError as exc:
        raise click.ClickException(
            f"cannot open the database ({exc.orig.__class__.__name__}: {exc.orig}); "
            "check database_url, or run `bridge db upgrade` to create it"
        ) from None
    finally:
        engine.dispose()
    click.echo(f"database at revision {current or 'none'} (newest: {head})")
    if current != head:
        click.echo("run `bridge db upgrade` to migrate", err=True)
        sys.exit(1)


def _ensure_sqlite_dir(url: str) -> None:
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


@click.command()
@click.option("--once", is_flag=True, help="Reconcile what is due now, then exit.")
@click.option(
    "--metrics",
    "metrics_at",
    metavar="[HOST:]PORT",
    help="Serve this worker's Prometheus metrics (mail-server calls, retries, limiter waits) "
    "at http://HOST:PORT/metrics; HOST defaults to 127.0.0.1.",
)
@pass_ctx
def worker(ctx: Context, once: bool, metrics_at: str | None) -> None:
    """Reconcile due services until SIGTERM (which finishes the current one first).

    Also reads the services' usage figures every usage.refresh_h hours (one worker does it).
    SIGHUP re-reads the config (mappings, mail server, everything) between two services; a
    broken file is refused with a log line and the worker goes on with the one it has.
    """
    from bridge.config import describe
    from bridge.logging import configure_logging
    from bridge.provisioning.jobs import run_once
    from bridge.provisioning.worker import run_forever

    settings = ctx.settings
    configure_logging(settings.logging.level, settings.logging.json)
    logging.getLogger("bridge.provisioning.worker").info("%s", describe(settings))
    rt = ctx.runtime()
    if metrics_at:
        _serve_metrics(metrics_at)
    if once:
        done = 0
        while run_once(rt) is not None:
            done += 1
        click.echo(f"{done} service(s) reconciled")
        return
    current = [rt]

    def reload(old: Runtime) -> Runtime:
        new = reload_runtime(old)
        current[0] = new
        return new

    try:
        run_forever(rt, reload=reload)
    finally:
        if current[0] is not rt:
            current[0].dispose()
            current[0].mailserver.http.close()


def reload_runtime(rt: Runtime) -> Runtime:
    """The worker's SIGHUP: read the config again; a new runtime, or `rt` if it is refused."""
    from bridge.config import describe, reload_config

    log = logging.getLogger("bridge.provisioning.worker")
    settings, problem = reload_config(rt.settings)
    if problem is not None:
        log.error("config reload refused, still serving %s: %s", describe(rt.settings), problem)
        return rt
    new = Runtime.build(settings)
    rt.dispose()
    rt.mailserver.http.close()
    log.info("config reloaded: %s", describe(settings))
    return new


def _serve_metrics(where: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = where.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{where!r} is not [HOST:]PORT", param_hint="--metrics")
    try:
        start_http_server(int(port), addr=host or "127.0.0.1")
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host or '127.0.0.1'}:{port} ({exc.strerror}); "
            "pick a free port"
        ) from None
    logging.getLogger("bridge.provisioning.worker").info(
        "metrics on http://%s:%s/metrics", host or "127.0.0.1", port
    )
