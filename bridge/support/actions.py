"""Staff actions shared by the console, the JSON API and the CLI; each writes the audit log.

Retry means "reconcile the service again" (docs/design.md#retries): the engine re-queues the
service's failed events and makes its job due; a single retry may then apply it at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import EventStatus
from bridge.mailserver import DomainAdmin
from bridge.models import AuditEntry, Event, Service
from bridge.provisioning.jobs import reconcile_now, retry_service
from bridge.provisioning.outcome import Outcome
from bridge.runtime import Runtime
from bridge.support import audit
from bridge.support.queries import EventFilter, retry_targets
from bridge.support.state import READ_BUDGET_S


@dataclass(frozen=True)
class Actor:
    """Who acts, and through which surface."""

    name: str
    via: str  # web | api | cli
    staff_id: int | None = None
    ip: str | None = None

    def audit(self, session: Session, action: str, now: datetime, **kw: Any) -> AuditEntry:
        """Record an action by this actor."""
        return audit.record(
            session,
            action,
            actor=self.name,
            via=self.via,
            now=now,
            staff_id=self.staff_id,
            ip=self.ip,
            **kw,
        )


class ActionError(BridgeError):
    """A staff action that cannot be done (nothing to retry, already resolved, ...)."""

    http_status = 409


class NotFoundError(BridgeError):
    """No such event or service."""

    http_status = 404


@dataclass(frozen=True)
class RetryResult:
    """A retry of one event's service: how many failed events were queued, and the outcome
    when it was applied at once."""

    event_id: int
    service_id: int
    requeued: int
    outcome: Outcome | None


@dataclass(frozen=True)
class BulkResult:
    """How many services were queued for a reconcile, and how many failed events with them."""

    services: int
    events: int


def _reopen(session: Session, service_id: int) -> None:
    """A retried failed event is an open question again, even if someone had resolved it."""
    for event in session.scalars(
        select(Event).where(
            Event.service_id == service_id,
            Event.status == EventStatus.FAILED,
            Event.resolved_at.is_not(None),
        )
    ):
        event.resolved_at = None
        event.resolved_by = None


def queue_retry(
    session: Session, service_id: int, actor: Actor, now: datetime, **kw: object
) -> AuditEntry:
    """Re-queue one service (and its failed events) with an audit row; the caller commits."""
    _reopen(session, service_id)
    requeued = retry_service(session, service_id, now)
    return actor.audit(session, "retry", now, service_id=service_id, requeued=requeued, **kw)


def record_outcome(rt: Runtime, entry_id: int, outcome: Outcome) -> None:
    """Add how a reconcile ended to the audit row of the action that asked for it."""
    with rt.transaction() as session:
        entry = session.get(AuditEntry, entry_id)
        if entry is not None:
            entry.detail = {
                **(entry.detail or {}),
                "outcome": outcome.status,
                "reason": outcome.reason,
                "message": outcome.message,
            }


def retry_event(
    rt: Runtime,
    event_id: int,
    actor: Actor,
    *,
    apply: bool = True,
) -> RetryResult:
    """Retry an event: queue its service again, then (if `apply`) reconcile it at once."""
    now = utcnow()
    with rt.transaction() as session:
        event = session.get(Event, event_id)
        if event is None:
            raise NotFoundError("not_found", f"there is no event {event_id}")
        if event.service_id is None:
            raise ActionError(
                "nothing_to_retry",
                f"event {event_id} provisions nothing (status {event.status.value}); "
                "there is no service to reconcile",
            )
        service_id = event.service_id
        entry = queue_retry(session, service_id, actor, now, event_id=event_id)
        session.flush()
        entry_id, requeued = entry.id, int(entry.detail["requeued"])
    outcome = None
    if apply:
        outcome = reconcile_now(rt, service_id)
        record_outcome(rt, entry_id, outcome)
    return RetryResult(event_id, service_id, requeued, outcome)


def bulk_retry(rt: Runtime, f: EventFilter, actor: Actor) -> BulkResult:
    """Queue every service with unresolved failed events matching `f`; the worker applies
    them at the mail server's rate limit."""
    now = utcnow()
    with rt.transaction() as session:
        service_ids, events = retry_targets(session, f)
        for service_id in service_ids:
            queue_retry(session, service_id, actor, now, bulk=True)
        actor.audit(
            session,
            "bulk_retry",
            now,
            services=len(service_ids),
            events=events,
            filter=f.params(),
        )
    return BulkResult(len(service_ids), events)


def resolve_event(rt: Runtime, event_id: int, actor: Actor, note: str | None = None) -> Event:
    """Mark a failed event as handled by a person; its status stays `failed`."""
    now = utcnow()
    with rt.transaction() as session:
        event = session.get(Event, event_id)
        if event is None:
            raise NotFoundError("not_found", f"there is no event {event_id}")
        if event.status is not EventStatus.FAILED:
            raise ActionError(
                "not_failed",
                f"event {event_id} is {event.status.value}; only a failed event can be resolved",
            )
        if event.resolved_at is not None:
            raise ActionError(
                "already_resolved",
                f"event {event_id} was resolved by {event.resolved_by} at "
                f"{event.resolved_at:%Y-%m-%d %H:%M} UTC",
            )
        event.resolved_at = now
        event.resolved_by = actor.name
        actor.audit(
            session,
            "resolve",
            now,
            event_id=event_id,
            service_id=event.service_id,
            note=(note or "").strip()[:500] or None,
        )
    return event


def reconcile(rt: Runtime, service_id: int, actor: Actor) -> Outcome:
    """Reconcile one service now (the service page's button), with an audit row."""
    with rt.reads() as session:
        if session.get(Service, service_id) is None:
            raise NotFoundError("not_found", f"there is no service {service_id}")
    outcome = reconcile_now(rt, service_id)
    now = utcnow()
    with rt.transaction() as session:
        actor.audit(
            session,
            "reconcile",
            now,
            service_id=service_id,
            outcome=outcome.status,
            reason=outcome.reason,
            message=outcome.message,
        )
    return outcome


@dataclass(frozen=True)
class LinkPreview:
    """The account a staff member is about to bind a service to, as the mail server shows it."""

    service_id: int
    label: str
    username: str
    recovery_email: str
    domains: tuple[str, ...]
    enabled: bool
    bound_to: str | None


def preview_link(rt: Runtime, service_id: int, username: str) -> LinkPreview:
    """Read the DomainAdmin `username` for a link or relink; change nothing."""
    name = username.strip()
    if not name or len(name) > 255:
        raise ActionError("invalid_username", "give the DomainAdmin's username")
    with rt.reads() as session:
        service = session.get(Service, service_id)
        if service is None:
            raise NotFoundError("not_found", f"there is no service {service_id}")
        label, bound_to = service.label, service.username if service.bound else None
        other = session.scalar(
            select(Service).where(
                func.lower(Service.username) == name.lower(),
                Service.bound_at.is_not(None),
                Service.id != service_id,
            )
        )
        if other is not None:
            raise ActionError(
                "already_bound",
                f'DomainAdmin "{name}" is already bound to service {other.label}; one account '
                "belongs to one service",
            )
    # a staff page view: from the staff share of the rate, never provisioning's
    account = rt.staff_mailserver.client(time.monotonic() + READ_BUDGET_S).find_domainadmin(name)
    if not isinstance(account, DomainAdmin):
        what = "does not exist" if account is None else f"is a {account.perm_level}"
        raise ActionError("no_such_domainadmin", f'"{name}" {what} on the mail server')
    return LinkPreview(
        service_id,
        label,
        account.username,
        account.recovery_email,
        account.domains,
        account.enabled,
        bound_to,
    )


def link_service(
    rt: Runtime, service_id: int, username: str, actor: Actor, *, relink: bool = False
) -> LinkPreview:
    """Bind a service to an existing DomainAdmin (staff), or move its binding (`relink`).

    The account is read first; the binding (how, when, who) and an audit row with the
    account's recovery e-mail and domains are written in one transaction. Nothing is
    written to the mail server: a Retry then applies the desired state.
    """
    preview = preview_link(rt, service_id, username)
    now = utcnow()
    with rt.transaction() as session:
        service = lock_service_row(session, service_id)
        if service.bound and not relink:
            raise ActionError(
                "already_linked",
                f'service {service.label} is bound to "{service.username}"; use relink to '
                "move the binding",
            )
        if relink and not service.bound:
            raise ActionError("not_linked", f"service {service.label} is not linked yet; link it")
        previous = service.username if service.bound else None
        service.username = preview.username
        service.bound_how = "relinked" if relink else "linked"
        service.bound_at, service.bound_by = now, actor.name
        actor.audit(
            session,
            "relink" if relink else "link",
            now,
            service_id=service_id,
            username=preview.username,
            previous=previous,
            recovery_email=preview.recovery_email,
            domains=",".join(preview.domains),
        )
    return preview


def lock_service_row(session: Session, service_id: int) -> Service:
    """The service row for an update (row-locked on PostgreSQL); NotFoundError if gone."""
    service = session.scalars(
        select(Service).where(Service.id == service_id).with_for_update()
    ).first()
    if service is None:
        raise NotFoundError("not_found", f"there is no service {service_id}")
    return service
