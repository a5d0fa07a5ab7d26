"""Staff actions shared by the console, the JSON API and the CLI; each writes the audit log.

Retry means "reconcile the service again" (docs/design.md#retries): the engine re-queues the
service's failed events and makes its job due; a single retry may then apply it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import EventStatus
from bridge.models import AuditEntry, Event, Service
from bridge.provisioning.jobs import reconcile_now, retry_service
from bridge.provisioning.outcome import Outcome
from bridge.runtime import Runtime
from bridge.support import audit
from bridge.support.queries import EventFilter, retry_targets


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


def _record_outcome(rt: Runtime, entry_id: int, outcome: Outcome) -> None:
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
        _record_outcome(rt, entry_id, outcome)
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
