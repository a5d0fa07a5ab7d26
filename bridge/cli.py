"""The `bridge` command: thin wrappers over the service modules."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from typing import Any

import click
import requests

from bridge.config import Settings, config_path, load_config
from bridge.errors import ConfigError
from bridge.hooks.base import Action
from bridge.hooks.samples import sample
from bridge.hooks.signature import sign
from bridge.mappings import resolve
from bridge.mappings.bundles import QuotaBundle, format_quota


class Context:
    """Loads settings (and the app) only when a command needs them."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_config(self.config)
            except ConfigError as exc:
                raise click.ClickException(exc.message) from None
        return self._settings

    def app(self) -> Any:
        from bridge.app import create_app

        return create_app(self.settings)


pass_ctx = click.make_pass_decorator(Context)


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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@pass_ctx
def run(ctx: Context, host: str, port: int) -> None:
    """Serve the bridge with the development server (use gunicorn in production)."""
    ctx.app().run(host=host, port=port, threaded=True)


@cli.group()
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


@cli.group()
def mappings() -> None:
    """Product tiers and add-ons."""


@mappings.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def mappings_check(ctx: Context, as_json: bool) -> None:
    """Validate the mappings and print the resolved table."""
    m = ctx.settings.mappings
    products = {
        source: {
            pid: {"tier": tier, "bundle": resolve(m, source, pid).bundle.as_dict()}
            for pid, tier in table.items()
        }
        for source, table in m.products.items()
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tiers": {name: b.as_dict() for name, b in m.tiers.items()},
                    "products": products,
                    "addons": {
                        s: {n: b.as_dict() for n, b in t.items()} for s, t in m.addons.items()
                    },
                },
                indent=2,
            )
        )
        return
    names = QuotaBundle.field_names()
    rows = [(name, *[format_quota(v) for v in b.as_dict().values()]) for name, b in m.tiers.items()]
    _table("Tiers", ("tier", *names), rows)
    rows = [(s, pid, p["tier"]) for s, table in products.items() for pid, p in table.items()]
    _table("Products", ("source", "product", "tier"), rows)
    rows = [
        (s, n, *[format_quota(v) for v in b.as_dict().values()])
        for s, table in m.addons.items()
        for n, b in table.items()
    ]
    _table("Add-ons (per unit)", ("source", "option", *names), rows)
    click.echo(
        f"mappings OK: {len(m.tiers)} tiers, {sum(len(t) for t in m.products.values())} "
        f"products, {sum(len(t) for t in m.addons.values())} add-ons"
    )


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    click.secho(title, bold=True)
    if not rows:
        click.echo("  (none)\n")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo(
            ("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False))).rstrip()
        )
    click.echo()


@cli.group()
def hooks() -> None:
    """Webhook tools."""


def _addon(_ctx: Any, _param: Any, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, qty = value.partition("=")
        if not sep or not qty.isascii() or not qty.isdigit():
            raise click.BadParameter(f"{value!r}: use NAME=QUANTITY, e.g. extra_mailboxes=5")
        out[name] = int(qty)
    return out


@hooks.command("send")
@click.argument("source")
@click.argument("action", type=click.Choice([a.value for a in Action]))
@click.option("--service", "service", type=int, required=True, help="Billing service id.")
@click.option("--product", type=int, help="Billing product id (default: the first mapped one).")
@click.option(
    "--addon",
    "addons",
    multiple=True,
    callback=_addon,
    metavar="NAME=QTY",
    help="Add-on quantity; repeat for several.",
)
@click.option("--client", type=int, help="Client id (for transfer: the new owner).")
@click.option("--to-service", type=int, help="transfer only: move mail ownership to this service.")
@click.option("--password", help="Password for create/change_password (default: random).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Bridge base URL.")
@click.option("--id", "webhook_id", help="webhook-id to send (default: a new one).")
def hooks_send(
    source: str,
    action: str,
    service: int,
    product: int | None,
    addons: dict[str, int],
    client: int | None,
    to_service: int | None,
    password: str | None,
    url: str,
    webhook_id: str | None,
) -> None:
    """Sign a realistic sample event for SOURCE and post it to the bridge.

    \b
    Example:  bridge hooks send whmcs create --service 1001
    """
    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None
    settings = ctx.settings
    src = settings.sources.get(source)
    if src is None:
        raise click.BadParameter(
            f'no source "{source}"; configured: {", ".join(settings.sources)}', param_hint="SOURCE"
        )
    if product is None:
        mapped = list(settings.mappings.products.get(source, {}))
        product = int(mapped[0]) if mapped and mapped[0].isdigit() else 1
    options: dict[str, Any] = {
        "product": product,
        "addons": addons,
        "client": client,
        "password": password,
        "to_service": to_service,
    }
    body = json.dumps(sample(src.kind, Action(action), service, **options)).encode()
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(src.secrets[0], msg_id, timestamp, body),
    }
    target = f"{url.rstrip('/')}/hooks/{source}"
    try:
        response = requests.post(target, data=body, headers=headers, timeout=(5, 60))
    except requests.RequestException as exc:
        raise click.ClickException(
            f"could not reach the bridge at {target}: {exc.__class__.__name__}; is it running "
            "(`make run`)?"
        ) from None
    try:
        answer = response.json()
        text = json.dumps(answer, indent=2)
    except ValueError:
        answer, text = {}, response.text[:500]
    click.echo(f"POST {target} -> HTTP {response.status_code}")
    click.echo(text)
    if response.status_code >= 400 or answer.get("status") == "failed":
        sys.exit(1)


@cli.command()
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
    """Reconcile due services until SIGTERM (which finishes the current one first)."""
    from bridge.logging import configure_logging
    from bridge.provisioning.jobs import run_once
    from bridge.worker import run_forever

    settings = ctx.settings
    configure_logging(settings.logging.level, settings.logging.json)
    factory, server = _engine_parts(settings)
    if metrics_at:
        _serve_metrics(metrics_at)
    if once:
        done = 0
        while run_once(factory, server, settings) is not None:
            done += 1
        click.echo(f"{done} service(s) reconciled")
        return
    run_forever(factory, server, settings)


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
    logging.getLogger("bridge.worker").info(
        "metrics on http://%s:%s/metrics", host or "127.0.0.1", port
    )


def _engine_parts(settings: Settings) -> tuple[Any, Any]:
    from sqlalchemy.orm import sessionmaker

    from bridge.db import make_engine
    from bridge.provisioning import build_mailserver

    engine = make_engine(settings.database_url)
    server = build_mailserver(settings, engine)
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(engine.dispose)
        context.call_on_close(server.http.close)
    return sessionmaker(engine, expire_on_commit=False), server


def _service_ids(factory: Any, source: str | None, service_ref: str | None) -> list[int]:
    from sqlalchemy import select

    from bridge.models import Service

    with factory() as session:
        query = select(Service.id).order_by(Service.id)
        if source is not None:
            query = query.where(Service.source == source)
        if service_ref is not None:
            query = query.where(Service.service_ref == service_ref)
        return list(session.scalars(query))


@cli.command()
@click.argument("source", required=False)
@click.argument("service_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Every service (of SOURCE, if given).")
@click.option("--dry-run", is_flag=True, help="Only show the drift; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def reconcile(
    ctx: Context,
    source: str | None,
    service_id: str | None,
    all_: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Show drift (desired vs actual, per field) and fix it unless --dry-run.

    \b
    bridge reconcile whmcs 1001            one service
    bridge reconcile --all --dry-run       every service, changing nothing
    """
    from bridge.provisioning.jobs import inspect, reconcile_now

    if not all_ and not (source and service_id):
        raise click.UsageError("give SOURCE SERVICE_ID, or --all")
    settings = ctx.settings
    factory, server = _engine_parts(settings)
    ids = _service_ids(factory, source, None if all_ else service_id)
    if not ids:
        raise click.ClickException("no such service in the ledger")
    report: list[dict[str, Any]] = []
    failures = 0
    with (
        click.progressbar(
            ids, label="reconciling" if not dry_run else "checking", file=sys.stderr, show_pos=True
        )
        if all_
        else _plain(ids) as bar
    ):
        for sid in bar:
            seen = inspect(factory, server, settings, sid)
            entry: dict[str, Any] = {"service": seen.label}
            if seen.error is not None:
                entry.update(error=seen.error.reason, message=seen.error.message)
                failures += 1
            else:
                assert seen.plan is not None
                entry["drift"] = [
                    {"field": d.field, "desired": d.desired, "actual": d.actual}
                    for d in seen.plan.drift
                ]
                entry["steps"] = [s.detail for s in seen.plan.steps]
                if not dry_run and seen.plan.steps:
                    outcome = reconcile_now(factory, server, settings, sid)
                    entry["outcome"] = outcome.status
                    if outcome.reason:
                        entry.update(reason=outcome.reason, message=outcome.message)
                    failures += outcome.status not in ("applied",)
            report.append(entry)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        for entry in report:
            _print_inspection(entry, dry_run)
        drifting = sum(1 for e in report if e.get("drift"))
        click.echo(f"{len(report)} service(s): {drifting} with drift, {failures} with errors")
    if failures:
        sys.exit(1)


class _plain:
    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __enter__(self) -> list[int]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


def _print_inspection(entry: dict[str, Any], dry_run: bool) -> None:
    if "error" in entry:
        click.echo(f"{entry['service']}: cannot reconcile: {entry['error']}: {entry['message']}")
        return
    if not entry["drift"] and not entry["steps"]:
        click.echo(f"{entry['service']}: in sync")
        return
    click.echo(f"{entry['service']}:")
    for d in entry["drift"]:
        click.echo(f"  {d['field']}: desired {d['desired']}, actual {d['actual']}")
    verb = "would" if dry_run else "did"
    for step in entry["steps"]:
        click.echo(f"  {verb}: {step}")
    if "outcome" in entry:
        tail = f" ({entry['reason']}: {entry['message']})" if entry.get("reason") else ""
        click.echo(f"  outcome: {entry['outcome']}{tail}")


@cli.group()
def services() -> None:
    """Billing services as the bridge knows them."""


@services.command("show")
@click.argument("source")
@click.argument("service_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def services_show(ctx: Context, source: str, service_id: str, as_json: bool) -> None:
    """Desired state, bundle, events and drift of one service."""
    from sqlalchemy import select

    from bridge.models import Event, Service
    from bridge.provisioning.jobs import inspect

    settings = ctx.settings
    factory, server = _engine_parts(settings)
    with factory() as session:
        service = session.scalar(
            select(Service).where(Service.source == source, Service.service_ref == service_id)
        )
        if service is None:
            raise click.ClickException(f"no service {service_id} from {source} in the ledger")
        events = session.scalars(
            select(Event).where(Event.service_id == service.id).order_by(Event.id)
        ).all()
        info: dict[str, Any] = {
            "service": f"{source}:{service_id}",
            "username": service.username,
            "state": service.desired_state.value if service.desired_state else None,
            "product": service.product_id,
            "tier_key": service.tier_key,
            "addons": service.addons,
            "client": service.client_email,
            "generation": service.generation,
            "applied_generation": service.applied_generation,
            "next_attempt_at": service.job_due_at.isoformat() if service.job_due_at else None,
            "last_reason": service.last_reason,
            "events": [
                {
                    "id": e.id,
                    "action": e.action,
                    "status": e.status.value,
                    "reason": e.reason,
                    "occurred_at": e.occurred_at.isoformat(),
                }
                for e in events
            ],
        }
        sid = service.id
    seen = inspect(factory, server, settings, sid)
    if seen.error is not None:
        info["drift_error"] = f"{seen.error.reason}: {seen.error.message}"
    elif seen.plan is not None:
        info["drift"] = [
            {"field": d.field, "desired": d.desired, "actual": d.actual} for d in seen.plan.drift
        ]
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for key in (
        "service",
        "username",
        "state",
        "product",
        "tier_key",
        "addons",
        "client",
        "generation",
        "applied_generation",
        "next_attempt_at",
        "last_reason",
    ):
        click.echo(f"{key:>19}: {info[key]}")
    click.echo("             events:")
    for e in info["events"]:
        click.echo(
            f"  #{e['id']} {e['occurred_at']} {e['action']} {e['status']} "
            f"{e['reason'] or ''}".rstrip()
        )
    if "drift_error" in info:
        click.echo(f"drift: cannot read the mail server: {info['drift_error']}")
    elif info.get("drift"):
        click.echo("drift:")
        for d in info["drift"]:
            click.echo(f"  {d['field']}: desired {d['desired']}, actual {d['actual']}")
    else:
        click.echo("drift: none, the mail server matches")


@cli.group("import")
def import_() -> None:
    """Adopt accounts that already exist on the mail server (never creates twice)."""


@import_.command("whmcs")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="WHMCS products/services export (id, pid, email, username, status, ...).",
)
@click.option("--source", default="whmcs", show_default=True, help="Source name in the config.")
@click.option("--apply", is_flag=True, help="Fix drift on the mail server (default: report only).")
@click.option(
    "--batch", default=50, show_default=True, type=click.IntRange(1), help="Rows per batch."
)
@click.option(
    "--pause",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to pause between batches (watch the server's load).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, then a summary.")
@pass_ctx
def import_whmcs(
    ctx: Context,
    csv_path: str,
    source: str,
    apply: bool,
    batch: int,
    pause: float,
    as_json: bool,
) -> None:
    """Link WHMCS services to their existing DomainAdmins and report drift.

    Safe to run again: rows already linked are reported as such, nothing is duplicated.
    """
    from pathlib import Path

    from bridge import importer

    settings = ctx.settings
    if source not in settings.sources:
        raise click.BadParameter(f'no source "{source}" in the config', param_hint="--source")
    addon_names = list(settings.mappings.addons.get(source, {}))
    try:
        rows = importer.read_whmcs_csv(Path(csv_path).read_text(encoding="utf-8"), addon_names)
    except importer.CsvImportError as exc:
        raise click.ClickException(exc.message) from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{csv_path} is not UTF-8 text") from None
    factory, server = _engine_parts(settings)
    click.echo(f"reading the DomainAdmins on {settings.mailserver.base_url} ...", err=True)
    index = _or_fail(lambda: importer.server_index(server))
    results = []
    with click.progressbar(
        length=len(rows), label="importing", file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:
        for number, chunk in enumerate(importer.batches(rows, batch)):
            if number and pause:
                time.sleep(pause)
            for row in chunk:
                result = importer.import_row(factory, server, settings, source, row, index, apply)
                results.append(result)
                if as_json:
                    click.echo(json.dumps(result.__dict__, default=list))
                bar.update(1)
    counts = importer.summarize(results)
    unknown = importer.unknown_to_billing(factory, source, index)
    summary = {
        "adopted": counts["adopted"],
        "already_linked": counts["already_linked"],
        "missing_on_server": counts["missing_on_server"],
        "unknown_to_billing": len(unknown),
        "drift": counts["drift"],
        "skipped": counts["skipped"],
        "errors": counts["error"],
    }
    if as_json:
        click.echo(json.dumps({"summary": summary}))
    else:
        for result in results:
            if result.outcome in ("missing_on_server", "error") or result.drift:
                click.echo(
                    f"line {result.line} service {result.service_ref} "
                    f"({result.username}): {result.outcome} {result.message}".rstrip()
                )
                for line in result.drift:
                    click.echo(f"    {line}")
        click.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
        if counts["drift"] and not apply:
            click.echo("drift was only reported; run again with --apply to fix it")
    if counts["error"]:
        sys.exit(1)


@import_.command("nms")
@click.option("--source", default="whmcs", show_default=True, help="Source name in the config.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def import_nms(ctx: Context, source: str, as_json: bool) -> None:
    """Match the mail server's DomainAdmins with the ledger's services by username."""
    from sqlalchemy import select

    from bridge import importer
    from bridge.models import Service

    settings = ctx.settings
    factory, server = _engine_parts(settings)
    index = _or_fail(lambda: importer.server_index(server))
    with factory() as session:
        services = {
            (s.username or "").lower(): s.service_ref
            for s in session.scalars(select(Service).where(Service.source == source))
        }
    linked = sorted(u for u in index if u in services)
    unknown = sorted(u for u in index if u not in services)
    missing = sorted(u for u in services if u and u not in index)
    report = {"linked": linked, "unknown_to_billing": unknown, "missing_on_server": missing}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for name in unknown:
        click.echo(f"unknown to billing: {name}")
    for name in missing:
        click.echo(f"missing on server: {name} (service {services[name]})")
    click.echo(
        f"{len(index)} DomainAdmins on the server: {len(linked)} linked, "
        f"{len(unknown)} unknown to billing; {len(missing)} services missing on server"
    )


def _or_fail(call: Any) -> Any:
    from bridge.errors import BridgeError

    try:
        return call()
    except BridgeError as exc:
        raise click.ClickException(f"{exc.reason}: {exc.message}") from None


from bridge.cli_staff import register as _register_staff  # noqa: E402

_register_staff(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
