"""`bridge reconcile` and `bridge services show`: drift, desired vs actual, and fixing it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bridge.cli.base import Context, actor, clean, database, pass_ctx, root
from bridge.runtime import Runtime


def _service_ids(rt: Runtime, source: str | None, service_ref: str | None) -> list[int]:
    from sqlalchemy import select

    from bridge.models import Service

    with rt.reads() as session:
        query = select(Service.id).order_by(Service.id)
        if source is not None:
            query = query.where(Service.source == source)
        if service_ref is not None:
            query = query.where(Service.service_ref == service_ref)
        return list(session.scalars(query))


@click.command()
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

    Every reconcile that changes something is in the audit log, by cli:<your OS user>.

    \b
    bridge reconcile whmcs 1001            one service
    bridge reconcile --all --dry-run       every service, changing nothing
    """
    from bridge.provisioning.jobs import inspect
    from bridge.support.actions import reconcile as audited_reconcile

    if not all_ and not (source and service_id):
        raise click.UsageError("give SOURCE SERVICE_ID, or --all")

    rt = ctx.runtime()
    who = actor()
    ids = _service_ids(rt, source, None if all_ else service_id)
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
            seen = inspect(rt, sid)
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
                    outcome = audited_reconcile(rt, sid, who)
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


def _v(value: Any) -> str:
    """A value for people: `-` for none, control characters escaped."""
    return "-" if value is None else clean(value)


class _plain:
    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __enter__(self) -> list[int]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


def _print_inspection(entry: dict[str, Any], dry_run: bool) -> None:
    if "error" in entry:
        click.echo(
            f"{clean(entry['service'])}: cannot reconcile: {entry['error']}: "
            f"{clean(entry['message'])}"
        )
        return
    if not entry["drift"] and not entry["steps"]:
        click.echo(f"{clean(entry['service'])}: in sync")
        return
    click.echo(f"{clean(entry['service'])}:")
    for d in entry["drift"]:
        click.echo(f"  {d['field']}: desired {_v(d['desired'])}, actual {_v(d['actual'])}")
    verb = "would" if dry_run else "did"
    for step in entry["steps"]:
        click.echo(f"  {verb}: {clean(step)}")
    if "outcome" in entry:
        tail = f" ({entry['reason']}: {clean(entry['message'])})" if entry.get("reason") else ""
        click.echo(f"  outcome: {entry['outcome']}{tail}")


@click.group()
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

    rt = ctx.runtime()
    with rt.reads() as session:
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
    seen = inspect(rt, sid)
    if seen.error is not None:
        info["drift_error"] = f"{seen.error.reason}: {seen.error.message}"
    elif seen.plan is not None:
        info["drift"] = [
            {"field": d.field, "desired": d.desired, "actual": d.actual} for d in seen.plan.drift
        ]
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    tier, bundle = _resolved(rt, source, info)
    addons = ", ".join(f"{k}={v}" for k, v in sorted((info["addons"] or {}).items()))
    due = info["next_attempt_at"]
    rows = (
        ("service", info["service"]),
        ("username", info["username"]),
        ("state", info["state"]),
        ("product", info["product"]),
        ("tier", tier),
        ("addons", addons or "none"),
        ("bundle", bundle),
        ("client", info["client"]),
        ("generation", f"{info['generation']} (applied: {info['applied_generation']})"),
        ("next_attempt_at", due or "nothing due"),
        ("last_reason", info["last_reason"]),
    )
    for key, value in rows:
        click.echo(f"{key:>19}: {'-' if value in (None, '') else clean(value)}")
    click.echo("             events:")
    for e in info["events"]:
        click.echo(
            f"  #{e['id']} {e['occurred_at']} {e['action']} {e['status']} "
            f"{e['reason'] or ''}".rstrip()
        )
    if "drift_error" in info:
        click.echo(f"drift: cannot read the mail server: {clean(info['drift_error'])}")
    elif info.get("drift"):
        click.echo("drift:")
        for d in info["drift"]:
            click.echo(f"  {d['field']}: desired {_v(d['desired'])}, actual {_v(d['actual'])}")
    else:
        click.echo("drift: none, the mail server matches")


def _resolved(rt: Runtime, source: str, info: dict[str, Any]) -> tuple[str, str]:
    """The tier and quota bundle the service maps to, or why it does not."""
    from bridge.errors import BridgeError
    from bridge.mappings import resolve

    if info["product"] is None and info["tier_key"] is None:
        return "-", "-"
    try:
        found = resolve(
            rt.settings.mappings, source, info["product"], info["tier_key"], info["addons"]
        )
    except BridgeError as exc:
        return f"- ({exc.reason})", "-"
    named = info["tier_key"] and " (named by the product's tier setting)"
    quotas = ", ".join(f"{k} {v}" for k, v in found.bundle.as_dict().items())
    return found.tier + (named or ""), quotas


def _link(source: str, service_id: str, username: str, yes: bool, relink: bool) -> None:
    from bridge.support.actions import link_service, preview_link

    rt = root().runtime()
    with database():
        ids = _service_ids(rt, source, service_id)
        if not ids:
            raise click.ClickException(f"no service {source}:{service_id} in the ledger")
        preview = preview_link(rt, ids[0], username)
        click.echo(f"service {clean(preview.label)}")
        click.echo(f"  bound now to:    {clean(preview.bound_to or '(nothing)')}")
        click.echo(f"  DomainAdmin:     {clean(preview.username)}")
        click.echo(f"  recovery e-mail: {clean(preview.recovery_email or '(none)')}")
        click.echo(f"  domains:         {clean(', '.join(preview.domains) or '(none)')}")
        click.echo(f"  enabled:         {'yes' if preview.enabled else 'no'}")
        if not yes:
            click.confirm("Is this the customer's account? Bind the service to it", abort=True)
        link_service(rt, ids[0], username, actor(), relink=relink)
    click.echo(
        f"{'relinked' if relink else 'linked'}: {preview.label} -> {preview.username}; "
        f"`bridge events retry --failed --source {source}` applies what is waiting"
    )


@services.command("link")
@click.argument("source")
@click.argument("service_id")
@click.argument("username")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def services_link(source: str, service_id: str, username: str, yes: bool) -> None:
    """Bind a service the bridge did not create to its existing DomainAdmin.

    Shows the account's recovery e-mail and domains first. Until a service is bound (by the
    bridge's own create, a create that adopted the client's account, `bridge import`, or
    this command) the bridge changes nothing for it.
    """
    _link(source, service_id, username, yes, relink=False)


@services.command("relink")
@click.argument("source")
@click.argument("service_id")
@click.argument("username")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def services_relink(source: str, service_id: str, username: str, yes: bool) -> None:
    """Move a bound service to another DomainAdmin (after `username_changed`)."""
    _link(source, service_id, username, yes, relink=True)
