"""Reconcile jobs: one per service, claimed with a lease, retried with backoff.

A service row is its own job (`job_due_at`, `lease_owner`, `lease_expires_at`). Claims use
`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite every write transaction starts with
BEGIN IMMEDIATE, so two local processes cannot claim the same row. Network calls happen
outside any transaction; only the snapshot, the suspend memory and the outcome are written.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from bridge import metrics
from bridge.config import Settings
from bridge.db import transaction, utcnow
from bridge.errors import BridgeError
from bridge.mailserver import MailServer, MailServerClient, PermanentError, TransientError
from bridge.mappings import UNLIMITED, resolve
from bridge.models import Attempt, Event, EventStatus, Service
from bridge.provisioning.reconcile import Desired, Plan, delete_time, execute, plan

log = logging.getLogger(__name__)

#: Service columns a plan may store before the call that makes them true.
REMEMBERED = ("suspended_accounts", "created_as_email")
#: Events whose effect is the bundle: blocked with it when the bundle cannot be applied.
PACKAGE_ACTIONS = ("create", "change_package")


def worker_id() -> str:
    """Who holds a lease: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass(frozen=True)
class Outcome:
    """How one reconcile ended."""

    service_id: int
    status: str  # applied | retry | failed | busy
    reason: str | None = None
    message: str | None = None
    write_calls: int = 0
    calls: int = 0


def backoff_s(attempt: int, schedule: tuple[int, ...], retry_after: float | None) -> float:
    """Full jitter over the schedule step for this attempt, never sooner than Retry-After."""
    base = schedule[min(attempt, len(schedule)) - 1]
    return max(random.uniform(0, base), retry_after or 0.0, 1.0)


def claim(
    factory: sessionmaker[Session],
    now: datetime,
    lease_s: int,
    owner: str,
    service_id: int | None = None,
) -> int | None:
    """Lease the most overdue service (or this one) whose job is due; None when none is."""
    with transaction(factory) as session:
        query = select(Service).where(
            Service.job_due_at <= now,
            or_(Service.lease_expires_at.is_(None), Service.lease_expires_at < now),
        )
        if service_id is not None:
            query = query.where(Service.id == service_id)
        query = query.order_by(Service.job_due_at, Service.id).limit(1)
        service = session.scalars(query.with_for_update(skip_locked=True)).first()
        if service is None:
            return None
        service.lease_owner = owner
        service.lease_expires_at = now + timedelta(seconds=lease_s)
        return service.id


def limits_for(service: Service, settings: Settings) -> dict[str, int]:
    """The mapped bundle as NMS numbers; raises a BridgeError with a reason when it can't be."""
    resolution = resolve(
        settings.mappings, service.source, service.product_id, service.tier_key, service.addons
    )
    limits = {}
    for name, value in resolution.bundle.as_dict().items():
        if value == UNLIMITED:
            if settings.mailserver.unlimited_value is None:
                raise PermanentError(
                    "unlimited_not_supported",
                    f'tier "{resolution.tier}" makes {name} unlimited, but the NMS documents no '
                    "unlimited value: set mailserver.unlimited_value in the config",
                )
            value = settings.mailserver.unlimited_value
        limits[name] = int(value)
    return limits


def snapshot(session: Session, service: Service, settings: Settings) -> Desired:
    """Freeze what the service should look like now."""
    target = None
    if service.transfer_to:
        target = session.scalar(
            select(Service).where(
                Service.source == service.source, Service.service_ref == service.transfer_to
            )
        )
    limits = limits_for(service, settings) if service.product_id or service.tier_key else None
    return Desired(
        service_id=service.id,
        source=service.source,
        service_ref=service.service_ref,
        generation=service.generation,
        username=service.username,
        state=service.desired_state,
        limits=limits,
        password_hash=service.password_hash,
        password_pending=service.password_pending,
        recovery_email=service.client_email,
        delete_at=delete_time(service.terminate_requested_at, settings.termination.grace_days),
        applied_before=service.applied_generation > 0,
        suspended_accounts=(
            tuple(service.suspended_accounts) if service.suspended_accounts is not None else None
        ),
        transfer_to_username=target.username if target is not None else None,
        transfer_to_ref=service.transfer_to,
        created_as_email=service.created_as_email,
    )


def read_and_plan(client: MailServerClient, desired: Desired, now: datetime) -> Plan:
    """Read the DomainAdmin (and a transfer's receiver) and plan the calls."""
    actual = client.find_domainadmin(desired.username) if desired.username else None
    target = None
    if desired.transfer_to_username:
        target = client.find_domainadmin(desired.transfer_to_username)
    return plan(desired, actual, now, target)


def reconcile_service(
    factory: sessionmaker[Session],
    server: MailServer,
    settings: Settings,
    service_id: int,
    owner: str,
    now: datetime | None = None,
    deadline: float | None = None,
) -> Outcome:
    """Reconcile one leased service and record the outcome; never raises for mail-server errors."""
    now = now or utcnow()
    client = server.client(deadline)
    desired: Desired | None = None
    result_plan: Plan | None = None
    try:
        with transaction(factory) as session:
            service = session.get(Service, service_id)
            if service is None or service.lease_owner != owner:
                return Outcome(service_id, "busy", "lease_lost", "another process holds it")
            desired = snapshot(session, service, settings)
        result_plan = read_and_plan(client, desired, now)

        def remember(column: str, value: object) -> None:
            if column not in REMEMBERED:
                raise ValueError(column)
            with transaction(factory) as session:
                row = session.get(Service, service_id)
                if row is not None:
                    setattr(row, column, value)

        record = execute(desired, result_plan.steps, client, remember)
    except TransientError as exc:
        return _finish(factory, settings, service_id, owner, desired, client, now, exc, None, None)
    except BridgeError as exc:
        permanent = (
            exc if isinstance(exc, PermanentError) else PermanentError(exc.reason, exc.message)
        )
        return _finish(
            factory, settings, service_id, owner, desired, client, now, permanent, None, None
        )
    return _finish(
        factory, settings, service_id, owner, desired, client, now, None, result_plan, record
    )


def _finish(
    factory: sessionmaker[Session],
    settings: Settings,
    service_id: int,
    owner: str,
    desired: Desired | None,
    client,  # type: ignore[no-untyped-def]
    now: datetime,
    error: TransientError | PermanentError | None,
    result_plan: Plan | None,
    record: dict | None,  # type: ignore[type-arg]
) -> Outcome:
    generation = desired.generation if desired is not None else None
    with transaction(factory) as session:
        service = session.get(Service, service_id)
        if service is None:
            return Outcome(service_id, "failed", "service_gone", "the service row disappeared")
        if generation is None:
            generation = service.generation
        session.add(
            Attempt(
                service_id=service_id,
                generation=generation,
                worker=owner,
                started_at=now,
                finished_at=utcnow(),
                outcome="applied"
                if error is None
                else ("retry" if isinstance(error, TransientError) else "failed"),
                reason=error.reason if error else None,
                message=error.message if error else (result_plan.note if result_plan else None),
                calls=[c.as_dict() for c in client.calls],
            )
        )
        service.lease_owner = None
        service.lease_expires_at = None
        newer = service.generation > generation
        events = session.scalars(
            select(Event).where(
                Event.service_id == service_id,
                Event.generation <= generation,
                Event.status.in_([EventStatus.QUEUED, EventStatus.RECEIVED, EventStatus.FAILED]),
            )
        ).all()
        status, reason, message = "applied", None, None
        if error is None:
            assert desired is not None and result_plan is not None and record is not None
            service.applied_generation = max(service.applied_generation, generation)
            if record.get("password_applied") and service.password_hash == desired.password_hash:
                service.password_pending = False
            if "suspended_accounts" in record:
                service.suspended_accounts = record["suspended_accounts"]
            if record.get("transfer_done") and service.transfer_to == desired.transfer_to_ref:
                service.transfer_to = None
            service.attempt_count = 0
            service.first_failure_at = None
            service.last_reason = service.last_message = None
            service.job_due_at = now if newer else result_plan.due_at
            blocked = result_plan.blocked.get("package")
            for event in events:
                if blocked is not None and event.action in PACKAGE_ACTIONS:
                    _fail([event], blocked.reason, blocked.message)
                    continue
                if event.status is EventStatus.FAILED and _replaced(event, events):
                    event.status = EventStatus.SUPERSEDED
                    event.reason = "superseded"
                    event.message = "a later event for this service replaced it"
                    continue
                event.status, event.finished_at = EventStatus.APPLIED, utcnow()
                event.reason = None
                event.message = result_plan.note or None
            if blocked is not None:
                status, reason, message = "failed", blocked.reason, blocked.message
                service.last_reason, service.last_message = reason, message
        elif isinstance(error, TransientError) and error.reason == "inline_timeout":
            status, reason, message = "retry", error.reason, error.message
            service.job_due_at = now
        elif isinstance(error, TransientError):
            service.attempt_count += 1
            service.first_failure_at = service.first_failure_at or now
            give_up = service.first_failure_at + timedelta(hours=settings.retry.give_up_after_h)
            delay = backoff_s(service.attempt_count, settings.retry.schedule_s, error.retry_after)
            due = now + timedelta(seconds=delay)
            service.last_reason, service.last_message = error.reason, error.message
            if due > give_up:
                status, reason = "failed", error.reason
                message = (
                    f"gave up after {settings.retry.give_up_after_h:g} h of retries; "
                    f"last error: {error.message}"
                )
                service.job_due_at = now if newer else None
                _fail(events, reason, message)
            else:
                status, reason, message = "retry", error.reason, error.message
                service.job_due_at = due
                for event in events:
                    if event.status is not EventStatus.FAILED:
                        event.status = EventStatus.QUEUED
                        event.reason, event.message = reason, message
        else:
            status, reason, message = "failed", error.reason, error.message
            service.last_reason, service.last_message = reason, message
            service.attempt_count = 0
            service.first_failure_at = None
            service.job_due_at = now if newer else None
            _fail(events, reason, message)
        decided = [e.log_fields() for e in events if e.status is not EventStatus.QUEUED]
    for fields in decided:
        log_event(fields)
    metrics.RECONCILES.labels(status).inc()
    if status == "retry" and reason != "inline_timeout":
        metrics.RETRIES.labels(reason).inc()
    log.info(
        "reconcile service=%s:%s generation=%s outcome=%s reason=%s calls=%d writes=%d",
        desired.source if desired else "?",
        desired.service_ref if desired else service_id,
        generation,
        status,
        reason,
        len(client.calls),
        client.write_calls,
    )
    return Outcome(service_id, status, reason, message, client.write_calls, len(client.calls))


_ACTION_ASPECTS = {
    "create": {"lifecycle", "package", "password", "owner"},
    "suspend": {"lifecycle"},
    "unsuspend": {"lifecycle"},
    "terminate": {"lifecycle"},
    "change_package": {"package"},
    "change_password": {"password"},
    "transfer": {"owner"},
}


def _replaced(event: Event, events: list[Event] | tuple[Event, ...]) -> bool:
    """True when a newer event of the batch sets everything this one set."""
    mine = _ACTION_ASPECTS.get(event.action or "", set())
    newer = set().union(
        *(
            _ACTION_ASPECTS.get(e.action or "", set())
            for e in events
            if (e.generation or 0) > (event.generation or 0)
        )
    )
    return bool(mine) and mine <= newer


def log_event(fields: dict[str, object]) -> None:
    """The one line per event outcome: id, service, action, status and reason."""
    log.info(
        "event %(event_id)s source=%(source)s service=%(service)s action=%(action)s "
        "status=%(status)s reason=%(reason)s",
        fields,
        extra={"fields": fields},
    )


def _fail(events: list[Event] | tuple[Event, ...], reason: str, message: str) -> None:
    for event in events:
        event.status, event.finished_at = EventStatus.FAILED, utcnow()
        event.reason, event.message = reason, message


def run_once(
    factory: sessionmaker[Session],
    server: MailServer,
    settings: Settings,
    now: datetime | None = None,
    owner: str | None = None,
) -> Outcome | None:
    """Claim and reconcile one due service; None when nothing is due."""
    now = now or utcnow()
    owner = owner or worker_id()
    service_id = claim(factory, now, settings.retry.lease_s, owner)
    if service_id is None:
        return None
    return reconcile_service(factory, server, settings, service_id, owner, now)


def run_inline(
    factory: sessionmaker[Session],
    server: MailServer,
    settings: Settings,
    service_id: int,
) -> Outcome:
    """Reconcile a service within the request, bounded by intake.inline_timeout_s."""
    owner = worker_id()
    now = utcnow()
    if claim(factory, now, settings.retry.lease_s, owner, service_id) is None:
        return Outcome(
            service_id,
            "busy",
            "service_busy",
            "another process is reconciling this service; the worker will finish",
        )
    deadline = time.monotonic() + settings.intake.inline_timeout_s
    return reconcile_service(factory, server, settings, service_id, owner, now, deadline)


@dataclass(frozen=True)
class Inspection:
    """Desired vs actual for one service, and what a reconcile would do."""

    service_id: int
    label: str
    plan: Plan | None
    error: BridgeError | None


def inspect(
    factory: sessionmaker[Session],
    server: MailServer,
    settings: Settings,
    service_id: int,
    now: datetime | None = None,
) -> Inspection:
    """Read the DomainAdmin and plan, without changing anything (the dry run)."""
    now = now or utcnow()
    with transaction(factory) as session:
        service = session.get(Service, service_id)
        if service is None:
            raise LookupError(service_id)
        label = f"{service.source}:{service.service_ref}"
        try:
            desired = snapshot(session, service, settings)
        except BridgeError as exc:
            return Inspection(service_id, label, None, exc)
    try:
        return Inspection(service_id, label, read_and_plan(server.client(), desired, now), None)
    except BridgeError as exc:
        return Inspection(service_id, label, None, exc)


def reconcile_now(
    factory: sessionmaker[Session],
    server: MailServer,
    settings: Settings,
    service_id: int,
) -> Outcome:
    """Reconcile one service at once (staff or CLI), whether or not its job is due."""
    owner = worker_id()
    now = utcnow()
    with transaction(factory) as session:
        service = session.get(Service, service_id)
        if service is None:
            raise LookupError(service_id)
        if service.lease_expires_at is not None and service.lease_expires_at > now:
            return Outcome(
                service_id,
                "busy",
                "service_busy",
                "another process is reconciling this service right now",
            )
        service.job_due_at = now
    if claim(factory, now, settings.retry.lease_s, owner, service_id) is None:
        return Outcome(service_id, "busy", "service_busy", "another process claimed it first")
    return reconcile_service(factory, server, settings, service_id, owner, now)


def retry_service(session: Session, service_id: int, now: datetime) -> int:
    """Queue a service's reconcile again (staff retry); its failed events go back to queued.

    Returns how many failed events were re-queued. The caller commits.
    """
    service = session.get(Service, service_id)
    if service is None:
        raise LookupError(service_id)
    failed = session.scalars(
        select(Event).where(Event.service_id == service_id, Event.status == EventStatus.FAILED)
    ).all()
    for event in failed:
        event.status, event.finished_at = EventStatus.QUEUED, None
        event.reason, event.message = "retry_requested", "queued again by a retry"
    service.job_due_at = now
    service.attempt_count = 0
    service.first_failure_at = None
    return len(failed)
