"""`bridge events ...`: failed hooks from a shell, with the console's reasons and actions."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import click

from bridge.cli.base import actor, clean, database, root
from bridge.lifecycle import Action, EventStatus
from bridge.runtime import Runtime


@click.group()
def events() -> None:
    """Find, show and retry events (webhook deliveries)."""


def _dump(schema: Any, data: Any) -> str:
    return json.dumps(schema.dump(data), indent=2, default=str)


@events.command("list")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]))
@click.option("--source", help="Billing source name.")
@click.option("--service", "service", help="The billing system's service id.")
@click.option("--action", type=click.Choice([a.value for a in Action]))
@click.option("--reason", help="Reason code, e.g. unmapped_product.")
@click.option("--before", type=int, help="Only events older than this id (the next page).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def events_list(
    status: str | None,
    source: str | None,
    service: str | None,
    action: str | None,
    reason: str | None,
    before: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """List events, newest first, with the counts per status.

    \b
    bridge events list --status failed
    bridge events list --source whmcs --service 1001 --json
    """
    from bridge.support.queries import EventFilter, list_events, status_counts
    from bridge.support.schemas import EventPageSchema

    f = EventFilter(
        status=EventStatus(status) if status else None,
        source=source,
        service=service,
        action=action,
        reason=reason,
    )
    rt = root().runtime()
    with database(), rt.reads() as session:
        page = list_events(session, f, before=before, limit=limit)
        counts = status_counts(session, f)
        if as_json:
            click.echo(
                _dump(
                    EventPageSchema(),
                    {
                        "events": page.events,
                        "next_before": page.older,
                        "prev_after": None,
                        "counts": {k.value: v for k, v in counts.items()},
                    },
                )
            )
            return
        rows = [
            (
                str(e.id),
                f"{e.received_at:%Y-%m-%d %H:%M:%S}",
                e.source,
                e.action or e.native_event,
                e.service_ref or "-",
                e.status.value + (" (resolved)" if e.resolved_at else ""),
                e.reason or "",
            )
            for e in page.events
        ]
    cells = [tuple(clean(v) for v in row) for row in rows]
    header = ("id", "received (UTC)", "source", "action", "service", "status", "reason")
    if cells:
        widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
        for row in (header, *cells):
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    else:
        click.echo("no event matches")
    click.echo(", ".join(f"{k.value} {v}" for k, v in counts.items() if v) or "no events")
    if page.older:
        click.echo(f"older: --before {page.older}")


@events.command("show")
@click.argument("event_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def events_show(event_id: int, as_json: bool) -> None:
    """Show one event: why it stands where it does, its payload, attempts and audit."""
    from bridge.models import Event
    from bridge.support import audit
    from bridge.support.queries import attempts_for
    from bridge.support.reasons import explain
    from bridge.support.schemas import EventDetailSchema, event_fields

    rt = root().runtime()
    with database(), rt.reads() as session:
        event = session.get(Event, event_id)
        if event is None:
            raise click.ClickException(f"there is no event {event_id}")
        attempts = attempts_for(session, event, 20)
        entries = audit.for_event(session, event.id, event.service_id)
        if as_json:
            click.echo(
                _dump(
                    EventDetailSchema(),
                    {
                        **event_fields(event),
                        "payload": event.payload,
                        "attempts": attempts,
                        "audit": entries,
                    },
                )
            )
            return
        click.secho(
            f"event {event.id}: {clean(event.action or event.native_event)} "
            f"{event.source}:{clean(event.service_ref or '-')}: {event.status.value}",
            bold=True,
        )
        if event.resolved_at:
            click.echo(
                f"resolved by {clean(event.resolved_by)} at {event.resolved_at:%Y-%m-%d %H:%M}"
            )
        why = explain(event.reason)
        if why is not None:
            click.echo(f"why: {why.title} ({event.reason})")
            if event.message:
                click.echo(f"     {clean(event.message)}")
            if why.todo:
                click.echo(f"do:  {why.todo}")
        click.echo(
            f"happened {event.occurred_at:%Y-%m-%d %H:%M:%S} UTC (billing time), received "
            f"{event.received_at:%Y-%m-%d %H:%M:%S} UTC, webhook-id {clean(event.webhook_id)}"
        )
        click.echo("payload (secrets redacted):")
        for line in json.dumps(event.payload, indent=2, sort_keys=True).splitlines():
            click.echo(f"  {line}")
        click.echo(f"attempts ({len(attempts)}):" if attempts else "attempts: none yet")
        for at in attempts:
            tail = f" {at.reason}: {clean(at.message)}" if at.reason else ""
            click.echo(f"  {at.started_at:%Y-%m-%d %H:%M:%S} {at.outcome or 'running'}{tail}")
            for c in at.calls:
                error = f" {c.get('error')}" if c.get("error") else ""
                click.echo(
                    f"    {c.get('method')} {clean(c.get('path'))} -> "
                    f"{c.get('status') or 'no answer'} "
                    f"({c.get('ms')} ms){error}"
                )
        if entries:
            click.echo("audit:")
            for entry in entries:
                click.echo(
                    f"  {entry.at:%Y-%m-%d %H:%M:%S} {clean(entry.actor)} ({entry.via}): "
                    f"{clean(audit.describe(entry))}"
                )
        if event.service_ref:
            click.echo(
                f"desired vs actual: bridge services show {event.source} {event.service_ref}"
            )


@events.command("retry")
@click.argument("event_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Every unresolved failed event (of --source).")
@click.option("--source", help="With --failed: only this billing source.")
@click.option(
    "--queue-only", is_flag=True, help="Only queue; the worker applies it at its own pace."
)
@click.option("--yes", "-y", is_flag=True, help="With --failed: do not ask for confirmation.")
def events_retry(
    event_id: int | None, failed: bool, source: str | None, queue_only: bool, yes: bool
) -> None:
    """Retry one event, or every failed one: reconcile their services again.

    \b
    bridge events retry 42
    bridge events retry --failed --source whmcs
    """
    if (event_id is None) == (not failed):
        raise click.UsageError("give an EVENT_ID or --failed (not both)")
    if source and not failed:
        raise click.UsageError("--source goes with --failed")
    rt = root().runtime()
    if event_id is not None:
        _retry_one(rt, event_id, queue_only)
    else:
        _retry_failed(rt, source, queue_only, yes)


def _retry_one(rt: Runtime, event_id: int, queue_only: bool) -> None:
    from bridge.support.actions import retry_event

    with database():
        result = retry_event(rt, event_id, actor(), apply=not queue_only)
    click.echo(f"event {event_id}: service queued again ({result.requeued} failed event(s))")
    outcome = result.outcome
    if outcome is None:
        return
    tail = f" ({outcome.reason}: {outcome.message})" if outcome.reason else ""
    click.echo(f"outcome: {outcome.status}{tail}")
    if outcome.status not in ("applied", "busy"):
        sys.exit(1)


def _retry_failed(rt: Runtime, source: str | None, queue_only: bool, yes: bool) -> None:
    from bridge.db import utcnow
    from bridge.provisioning.jobs import reconcile_now
    from bridge.support.actions import queue_retry, record_outcome
    from bridge.support.queries import EventFilter, retry_targets

    f = EventFilter(status=EventStatus.FAILED, source=source, unresolved=True)
    who = actor()
    with database(), rt.reads() as session:
        targets, count = retry_targets(session, f)
    if not targets:
        click.echo("no unresolved failed event: nothing to retry")
        return
    what = f"{len(targets)} service(s) ({count} failed event(s))"
    if not yes:
        click.confirm(f"Reconcile {what} again?", abort=True)
    outcomes: Counter[str] = Counter()
    with database():
        with click.progressbar(
            targets,
            label="queueing" if queue_only else "reconciling",
            file=sys.stderr,
            show_pos=True,
        ) as bar:
            for service_id in bar:
                with rt.transaction() as session:
                    entry = queue_retry(session, service_id, who, utcnow(), bulk=True)
                    session.flush()
                    entry_id = entry.id
                if not queue_only:
                    outcome = reconcile_now(rt, service_id)
                    record_outcome(rt, entry_id, outcome)  # the audit row says how it ended
                    outcomes[outcome.status] += 1
        with rt.transaction() as session:
            who.audit(
                session,
                "bulk_retry",
                utcnow(),
                services=len(targets),
                events=count,
                filter=f.params(),
                outcomes=dict(outcomes) or None,
            )
    if queue_only:
        click.echo(f"queued {what}; `bridge worker` applies them")
        return
    click.echo(f"{what}: " + ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())))
    if any(status not in ("applied", "busy") for status in outcomes):
        click.echo("see `bridge events list --status failed` for what still fails", err=True)
        sys.exit(1)
