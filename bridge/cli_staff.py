"""`bridge staff ...` and `bridge events ...`: staff accounts, and failed hooks from a shell."""

from __future__ import annotations

import getpass
import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from bridge.hooks.base import Action
from bridge.models import EventStatus
from bridge.staff import StaffRole


def _root() -> Any:
    """The `bridge` group's Context (settings loaded on first use)."""
    return click.get_current_context().find_root().obj


def _parts() -> tuple[Any, Any, Any]:
    from bridge.cli import _engine_parts

    settings = _root().settings
    factory, server = _engine_parts(settings)
    return settings, factory, server


def _actor() -> Any:
    from bridge.admin.actions import Actor

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}", "cli")


@contextmanager
def _database() -> Iterator[None]:
    """Turn a missing table or an unreachable database into a clear message."""
    from bridge.errors import BridgeError

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


def register(cli: click.Group) -> None:
    """Attach the `staff` and `events` groups to the `bridge` command."""
    cli.add_command(staff)
    cli.add_command(events)


# ---- staff --------------------------------------------------------------------------------


@click.group()
def staff() -> None:
    """Staff accounts for the console (/admin/) and the JSON API (/api/)."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@staff.command("add")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in StaffRole]),
    default=StaffRole.VIEWER.value,
    show_default=True,
    help="viewer reads; operator also retries, resolves and reconciles.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def staff_add(email: str, role: str, password_stdin: bool) -> None:
    """Add a staff member; asks for the password twice (input hidden).

    \b
    bridge staff add ops@example.com --role operator
    printf '%s\\n' "$PASSWORD" | bridge staff add ops@example.com --password-stdin
    """
    from bridge import staff as staff_mod
    from bridge.db import transaction, utcnow

    password = _read_password(password_stdin)
    problems = staff_mod.password_problems(password)
    if problems:
        raise click.ClickException("the password " + "; ".join(problems))
    _, factory, _ = _parts()
    actor = _actor()
    with _database(), transaction(factory) as session:
        now = utcnow()
        user = staff_mod.add_staff(session, email, password, StaffRole(role), now)
        actor.audit(session, "staff_added", now, email=user.email, role=role)
        address = user.email
    click.echo(f"added {role} {address}; log in at /admin/login")


def _find(session: Any, email: str) -> Any:
    from bridge.staff import find_staff

    user = find_staff(session, email)
    if user is None:
        raise click.ClickException(f"no staff member {email}; add one with `bridge staff add`")
    return user


@staff.command("token")
@click.argument("email")
@click.option("--label", help="What the token is for, e.g. the script using it.")
def staff_token(email: str, label: str | None) -> None:
    """Make a new API token for EMAIL and print it once (only its hash is stored).

    \b
    TOKEN=$(bridge staff token ops@example.com --label nightly)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/api/events?status=failed
    """
    from bridge.db import transaction, utcnow
    from bridge.staff import issue_token

    _, factory, _ = _parts()
    actor = _actor()
    with _database(), transaction(factory) as session:
        now = utcnow()
        user = _find(session, email)
        issued = issue_token(session, user, now, label)
        session.flush()
        actor.audit(
            session, "token_issued", now, email=user.email, token=issued.row.id, label=label
        )
        token_id, prefix = issued.row.id, issued.row.prefix
    click.echo(
        f"token {token_id} ({prefix}…) for {user.email}; it is shown only now, store it", err=True
    )
    click.echo(issued.token)


@staff.command("revoke")
@click.argument("email")
@click.option("--token-id", type=int, help="Revoke only this token (default: all of EMAIL's).")
def staff_revoke(email: str, token_id: int | None) -> None:
    """Revoke EMAIL's API tokens (or one of them); API calls with them fail at once."""
    from bridge.db import transaction, utcnow
    from bridge.staff import revoke_tokens

    _, factory, _ = _parts()
    actor = _actor()
    with _database(), transaction(factory) as session:
        now = utcnow()
        user = _find(session, email)
        count = revoke_tokens(session, user, now, token_id)
        actor.audit(
            session,
            "token_revoked",
            now,
            email=user.email,
            tokens=[token_id] if token_id else "all",
            count=count,
        )
    click.echo(f"revoked {count} token(s) of {user.email}")


@staff.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def staff_list(as_json: bool) -> None:
    """List staff members, their roles and active API tokens."""
    from bridge.staff import list_staff

    _, factory, _ = _parts()
    with _database(), factory() as session:
        rows = [
            {
                "email": user.email,
                "role": user.role.value,
                "active_tokens": tokens,
                "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
                "disabled": user.disabled_at is not None,
            }
            for user, tokens in list_staff(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no staff yet; add one with `bridge staff add EMAIL --role operator`")
        return
    for row in rows:
        login = row["last_login_at"] or "never logged in"
        click.echo(f"{row['email']}  {row['role']}  {row['active_tokens']} token(s)  {login}")


# ---- events -------------------------------------------------------------------------------


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
    from bridge.api.schemas import EventPageSchema
    from bridge.events_query import EventFilter, list_events, status_counts

    f = EventFilter(
        status=EventStatus(status) if status else None,
        source=source,
        service=service,
        action=action,
        reason=reason,
    )
    _, factory, _ = _parts()
    with _database(), factory() as session:
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
    header = ("id", "received (UTC)", "source", "action", "service", "status", "reason")
    if rows:
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        for row in (header, *rows):
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
    from sqlalchemy import select

    from bridge import audit
    from bridge.admin.reasons import explain
    from bridge.api.schemas import EventDetailSchema, event_fields
    from bridge.models import Attempt, Event

    _, factory, _ = _parts()
    with _database(), factory() as session:
        event = session.get(Event, event_id)
        if event is None:
            raise click.ClickException(f"there is no event {event_id}")
        attempts: list[Attempt] = []
        if event.service_id is not None:
            query = select(Attempt).where(Attempt.service_id == event.service_id)
            if event.generation is not None:
                query = query.where(Attempt.generation >= event.generation)
            attempts = list(session.scalars(query.order_by(Attempt.id.desc()).limit(20)))
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
            f"event {event.id}: {event.source} {event.action or event.native_event} "
            f"service {event.service_ref or '-'}: {event.status.value}",
            bold=True,
        )
        if event.resolved_at:
            click.echo(f"resolved by {event.resolved_by} at {event.resolved_at:%Y-%m-%d %H:%M}")
        why = explain(event.reason)
        if why is not None:
            click.echo(f"why: {why.title} ({event.reason})")
            if event.message:
                click.echo(f"     {event.message}")
            if why.todo:
                click.echo(f"do:  {why.todo}")
        click.echo(
            f"happened {event.occurred_at:%Y-%m-%d %H:%M:%S} UTC (billing time), received "
            f"{event.received_at:%Y-%m-%d %H:%M:%S} UTC, webhook-id {event.webhook_id}"
        )
        click.echo("payload (secrets redacted):")
        for line in json.dumps(event.payload, indent=2, sort_keys=True).splitlines():
            click.echo(f"  {line}")
        click.echo(f"attempts ({len(attempts)}):" if attempts else "attempts: none yet")
        for at in attempts:
            tail = f" {at.reason}: {at.message}" if at.reason else ""
            click.echo(f"  {at.started_at:%Y-%m-%d %H:%M:%S} {at.outcome or 'running'}{tail}")
            for c in at.calls:
                error = f" {c.get('error')}" if c.get("error") else ""
                click.echo(
                    f"    {c.get('method')} {c.get('path')} -> {c.get('status')} "
                    f"({c.get('ms')} ms){error}"
                )
        if entries:
            click.echo("audit:")
            for entry in entries:
                click.echo(
                    f"  {entry.at:%Y-%m-%d %H:%M:%S} {entry.actor} ({entry.via}): "
                    f"{audit.describe(entry)}"
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
    settings, factory, server = _parts()
    if event_id is not None:
        _retry_one(factory, server, settings, event_id, queue_only)
    else:
        _retry_failed(factory, server, settings, source, queue_only, yes)


def _retry_one(factory: Any, server: Any, settings: Any, event_id: int, queue_only: bool) -> None:
    from bridge.admin.actions import retry_event

    with _database():
        result = retry_event(factory, server, settings, event_id, _actor(), apply=not queue_only)
    click.echo(f"event {event_id}: service queued again ({result.requeued} failed event(s))")
    outcome = result.outcome
    if outcome is None:
        return
    tail = f" ({outcome.reason}: {outcome.message})" if outcome.reason else ""
    click.echo(f"outcome: {outcome.status}{tail}")
    if outcome.status not in ("applied", "busy"):
        sys.exit(1)


def _retry_failed(
    factory: Any, server: Any, settings: Any, source: str | None, queue_only: bool, yes: bool
) -> None:
    from bridge.admin.actions import queue_retry
    from bridge.db import transaction, utcnow
    from bridge.events_query import EventFilter, retry_targets
    from bridge.provisioning.jobs import reconcile_now

    f = EventFilter(status=EventStatus.FAILED, source=source, unresolved=True)
    actor = _actor()
    with _database(), factory() as session:
        targets, count = retry_targets(session, f)
    if not targets:
        click.echo("no unresolved failed event: nothing to retry")
        return
    what = f"{len(targets)} service(s) ({count} failed event(s))"
    if not yes:
        click.confirm(f"Reconcile {what} again?", abort=True)
    outcomes: Counter[str] = Counter()
    with _database():
        with click.progressbar(
            targets,
            label="queueing" if queue_only else "reconciling",
            file=sys.stderr,
            show_pos=True,
        ) as bar:
            for service_id in bar:
                with transaction(factory) as session:
                    queue_retry(session, service_id, actor, utcnow(), bulk=True)
                if not queue_only:
                    outcomes[reconcile_now(factory, server, settings, service_id).status] += 1
        with transaction(factory) as session:
            actor.audit(
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
