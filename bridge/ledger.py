"""The ledger: store each event and fold it into its service's desired state, in one transaction.

Events are edges, the bridge is level-triggered (docs/design.md#desired-state). Each action touches
some aspects of the desired state; an aspect only moves forward in billing time, so a late
event cannot undo a newer one. An event whose every aspect is already newer is `superseded`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.errors import BridgeError
from bridge.lifecycle import (
    Action,
    BillingEvent,
    EventStatus,
    Ignored,
    ServiceState,
    aspects_of,
)
from bridge.mappings import MappingError, Mappings, refuse_ambiguous_zero, resolve
from bridge.models import Event, Service

log = logging.getLogger(__name__)

LIFECYCLE: dict[Action, ServiceState] = {
    Action.CREATE: ServiceState.ACTIVE,
    Action.UNSUSPEND: ServiceState.ACTIVE,
    Action.SUSPEND: ServiceState.SUSPENDED,
    Action.TERMINATE: ServiceState.TERMINATED,
}


class IdempotencyConflictError(BridgeError):
    """A webhook id seen before arrived with a different body."""

    http_status = 422


def find_event(session: Session, source: str, webhook_id: str, body_sha256: str) -> Event | None:
    """The event stored for this delivery id, or None; a different body is a conflict."""
    existing = session.scalar(
        select(Event).where(Event.source == source, Event.webhook_id == webhook_id)
    )
    if existing is not None and existing.body_sha256 != body_sha256:
        raise IdempotencyConflictError(
            "idempotency_conflict",
            f"webhook-id {webhook_id} was already used for a different body (event "
            f"{existing.id}); send a new id for a new event",
        )
    return existing


def lock_service(session: Session, source: str, service_ref: str) -> Service:
    """Get or create the service row, locked for this transaction."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(Service)
        .values(
            source=source,
            service_ref=service_ref,
            addons={},
            aspect_times={},
            generation=0,
            applied_generation=0,
            attempt_count=0,
            password_pending=False,
        )
        .on_conflict_do_nothing(index_elements=["source", "service_ref"])
    )
    query = select(Service).where(Service.source == source, Service.service_ref == service_ref)
    if dialect == "postgresql":
        query = query.with_for_update()
    service = session.scalars(query.execution_options(populate_existing=True)).one()
    return service


def _apply_aspect(
    service: Service, aspect: str, event: BillingEvent, password_hash: str | None
) -> None:
    if aspect == "lifecycle":
        # Only an unsuspend or a create cancels a pending deletion; a suspend keeps it (the
        # account stays disabled and is deleted when the grace period ends), and a repeated
        # terminate keeps the first deletion date.
        pending = service.terminate_requested_at
        if event.action in (Action.SUSPEND, Action.TERMINATE) and pending is not None:
            service.desired_state = ServiceState.TERMINATED
            return
        state = LIFECYCLE[event.action]
        service.desired_state = state
        service.terminate_requested_at = (
            event.occurred_at if state is ServiceState.TERMINATED else None
        )
    elif aspect == "package":
        service.product_id = event.product_id
        service.tier_key = event.tier_key
        service.addons = dict(event.addons)
    elif aspect == "password":
        if password_hash is not None:
            service.password_hash = password_hash
            service.password_pending = True
    elif aspect == "owner":
        service.client_ref = event.client_ref
        service.client_email = event.client_email
        service.client_name = event.client_name
    elif aspect == "ownership":
        service.transfer_to = event.target_service_ref


def _stamp(times: dict[str, str], aspect: str, at: datetime) -> bool:
    seen = times.get(aspect)
    if seen is not None and datetime.fromisoformat(seen) > at:
        return False
    times[aspect] = at.isoformat()
    return True


def record_event(
    session: Session,
    *,
    source: str,
    webhook_id: str,
    body_sha256: str,
    parsed: BillingEvent | Ignored,
    password_hash: str | None,
    mappings: Mappings,
    now: datetime,
    zero_quota: str | None = None,
) -> Event:
    """Store one new event and update its service's desired state; the caller commits.

    `zero_quota` is what `bridge check-server` saw a quota of 0 do (None before it ran): a
    bundle with a 0 fails at once unless it is "zero" (mappings.refuse_ambiguous_zero).
    """
    if isinstance(parsed, Ignored):
        event = Event(
            source=source,
            webhook_id=webhook_id,
            body_sha256=body_sha256,
            native_event=parsed.native_event,
            action=None,
            service_ref=parsed.service_ref,
            occurred_at=now,
            received_at=now,
            payload=parsed.payload,
            status=EventStatus.IGNORED,
            reason="not_provisioning",
            message=parsed.message,
            finished_at=now,
        )
        session.add(event)
        return event

    service = lock_service(session, source, parsed.service_ref)
    event = Event(
        source=source,
        webhook_id=webhook_id,
        body_sha256=body_sha256,
        native_event=parsed.native_event,
        action=parsed.action.value,
        service=service,
        service_ref=parsed.service_ref,
        occurred_at=parsed.occurred_at,
        received_at=now,
        payload=parsed.payload,
        status=EventStatus.RECEIVED,
    )
    session.add(event)
    if (
        service.bound
        and parsed.username
        and parsed.username.lower() != (service.username or "").lower()
    ):
        # Never re-target a bound service: a typo must not steer writes to another account.
        event.status, event.finished_at = EventStatus.FAILED, now
        event.reason = "username_changed"
        event.message = (
            f'the event names DomainAdmin "{parsed.username}", but this service is bound to '
            f'"{service.username}"; nothing was changed. If the account really changed, relink '
            f"the service (service page, or `bridge services relink {source} "
            f"{parsed.service_ref} {parsed.username}`), then retry"
        )
        return event
    if not service.bound and parsed.username and service.username is None:
        service.username = parsed.username
    if service.domain is None and parsed.domain:
        service.domain = parsed.domain
    if parsed.action is Action.CREATE:
        service.create_requested = True

    aspects = aspects_of(parsed.action, parsed.transfer_kind)
    if not aspects:
        event.status, event.finished_at = EventStatus.APPLIED, now
        event.message = "recorded; a renewal changes nothing on the mail server"
        return event

    times = dict(service.aspect_times or {})
    moved = [a for a in aspects if _stamp(times, a, parsed.occurred_at)]
    if not moved:
        event.status, event.finished_at = EventStatus.SUPERSEDED, now
        event.reason = "superseded"
        event.message = "a newer event for this service was already absorbed; nothing changes"
        return event
    service.aspect_times = times
    if parsed.action is Action.CREATE and not service.bound and parsed.username:
        # Until bound, the newest create names the account to create or adopt.
        service.username = parsed.username
    for aspect in moved:
        _apply_aspect(service, aspect, parsed, password_hash)
    service.generation += 1
    event.generation = service.generation

    if "package" in moved:
        try:
            resolution = resolve(
                mappings, source, service.product_id, service.tier_key, service.addons
            )
            refuse_ambiguous_zero(resolution, zero_quota)
        except MappingError as exc:
            event.status, event.finished_at = EventStatus.FAILED, now
            event.reason, event.message = exc.reason, exc.message
            service.last_reason, service.last_message = exc.reason, exc.message
            service.job_due_at = None
            return event
    event.status = EventStatus.QUEUED
    if service.job_due_at is None or service.job_due_at > now:
        service.job_due_at = now
    return event
