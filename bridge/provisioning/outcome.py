"""How one reconcile ended, written back in one short transaction: the attempt row, the
service's job (done, retry later, or stopped) and the status of the events it covered."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import metrics
from bridge.config import Settings
from bridge.db import utcnow
from bridge.lifecycle import Action, EventStatus, TransferKind, aspects_of
from bridge.mailserver import Call, PermanentError, TransientError
from bridge.models import Attempt, Event, Service
from bridge.provisioning.reconcile import Desired, Plan
from bridge.runtime import Runtime

log = logging.getLogger(__name__)

#: Events whose effect is the bundle: blocked with it when the bundle cannot be applied.
PACKAGE_ACTIONS = ("create", "change_package")
_ASPECTS = {a.value: set(aspects_of(a, TransferKind.CLIENT)) for a in Action}


@dataclass(frozen=True)
class Outcome:
    """How one reconcile ended."""

    service_id: int
    status: str  # applied | retry | failed | busy
    reason: str | None = None
    message: str | None = None
    write_calls: int = 0
    calls: int = 0


@dataclass(frozen=True)
class Attempted:
    """What one reconcile did, for `finish()`: its error, or its plan and what to record."""

    service_id: int
    owner: str
    started: datetime
    desired: Desired | None
    calls: list[Call] = field(default_factory=list)
    write_calls: int = 0
    error: TransientError | PermanentError | None = None
    plan: Plan | None = None
    record: dict[str, Any] | None = None


@dataclass
class _Decision:
    status: str = "applied"
    reason: str | None = None
    message: str | None = None


def backoff_s(attempt: int, schedule: tuple[int, ...], retry_after: float | None) -> float:
    """Full jitter over the schedule step for this attempt, never sooner than Retry-After."""
    base = schedule[min(attempt, len(schedule)) - 1]
    return max(random.uniform(0, base), retry_after or 0.0, 1.0)


def finish(rt: Runtime, done: Attempted) -> Outcome:
    """Record the attempt, release the lease, move the job and its events; log the result."""
    with rt.transaction() as session:
        service = session.get(Service, done.service_id)
        if service is None:
            return Outcome(done.service_id, "failed", "service_gone", "the service row disappeared")
        generation = done.desired.generation if done.desired is not None else service.generation
        session.add(_attempt_row(done, generation))
        service.lease_owner = None
        service.lease_expires_at = None
        newer = service.generation > generation
        events = _open_events(session, done.service_id, generation)
        if done.error is None:
            decision = _applied(service, events, done, newer)
        elif isinstance(done.error, TransientError):
            decision = _transient(service, events, done.error, done.started, newer, rt.settings)
        else:
            decision = _permanent(service, events, done.error, done.started, newer)
        decided = [e.log_fields() for e in events if e.status is not EventStatus.QUEUED]
        label = service.label  # whmcs:1002, also when the desired state could not be built
    for fields in decided:
        log_event(fields)
    metrics.RECONCILES.labels(decision.status).inc()
    if decision.status == "retry" and decision.reason != "inline_timeout":
        metrics.RETRIES.labels(decision.reason).inc()
    log.info(
        "reconcile service=%s generation=%s outcome=%s reason=%s calls=%d writes=%d",
        label,
        generation,
        decision.status,
        decision.reason,
        len(done.calls),
        done.write_calls,
    )
    return Outcome(
        done.service_id,
        decision.status,
        decision.reason,
        decision.message,
        done.write_calls,
        len(done.calls),
    )


def _attempt_row(done: Attempted, generation: int) -> Attempt:
    error = done.error
    if error is None:
        outcome = "applied"
    else:
        outcome = "retry" if isinstance(error, TransientError) else "failed"
    return Attempt(
        service_id=done.service_id,
        generation=generation,
        worker=done.owner,
        started_at=done.started,
        finished_at=utcnow(),
        outcome=outcome,
        reason=error.reason if error else None,
        message=error.message if error else (done.plan.note if done.plan else None),
        calls=[c.as_dict() for c in done.calls],
    )


def _open_events(session: Session, service_id: int, generation: int) -> list[Event]:
    """The events this reconcile answers: up to its generation, not yet settled."""
    return list(
        session.scalars(
            select(Event).where(
                Event.service_id == service_id,
                Event.generation <= generation,
                Event.status.in_([EventStatus.QUEUED, EventStatus.RECEIVED, EventStatus.FAILED]),
            )
        )
    )


def _applied(service: Service, events: list[Event], done: Attempted, newer: bool) -> _Decision:
    """The plan ran: the service matches (except a package part the plan had to block)."""
    desired, plan, record = done.desired, done.plan, done.record
    assert desired is not None and plan is not None and record is not None
    service.applied_generation = max(service.applied_generation, desired.generation)
    if plan.binds and not service.bound and service.username == desired.username:
        service.bound_how, service.bound_at, service.bound_by = plan.binds, done.started, "bridge"
    password_done = record.get("password_applied") or plan.password_done or record.get("deleted")
    if password_done and service.password_hash == desired.password_hash:
        # Keep less: once applied (or no longer needed) the hash is erased, in this same
        # transaction; a newer one that arrived meanwhile stays pending.
        service.password_pending = False
        service.password_hash = None
    if "suspended_accounts" in record:
        service.suspended_accounts = record["suspended_accounts"]
    if record.get("transfer_done") and service.transfer_to == desired.transfer_to_ref:
        service.transfer_to = None
    service.attempt_count = 0
    service.first_failure_at = None
    service.last_reason = service.last_message = None
    service.job_due_at = done.started if newer else plan.due_at
    blocked = plan.blocked.get("package")
    for event in events:
        if blocked is not None and event.action in PACKAGE_ACTIONS:
            _fail([event], blocked.reason, blocked.message)
        elif event.status is EventStatus.FAILED and _replaced(event, events):
            event.status = EventStatus.SUPERSEDED
            event.reason = "superseded"
            event.message = "a later event for this service replaced it"
        else:
            event.status, event.finished_at = EventStatus.APPLIED, utcnow()
            event.reason = None
            event.message = plan.note or None
    if blocked is None:
        return _Decision()
    service.last_reason, service.last_message = blocked.reason, blocked.message
    return _Decision("failed", blocked.reason, blocked.message)


def _transient(
    service: Service,
    events: list[Event],
    error: TransientError,
    now: datetime,
    newer: bool,
    settings: Settings,
) -> _Decision:
    """The server did not answer well: retry on the schedule, or give up after the window."""
    if error.reason == "inline_timeout":
        # Out of the request's time: the worker picks it up at once, no attempt counted.
        service.job_due_at = now
        return _Decision("retry", error.reason, error.message)
    service.attempt_count += 1
    service.first_failure_at = service.first_failure_at or now
    give_up = service.first_failure_at + timedelta(hours=settings.retry.give_up_after_h)
    delay = backoff_s(service.attempt_count, settings.retry.schedule_s, error.retry_after)
    due = now + timedelta(seconds=delay)
    service.last_reason, service.last_message = error.reason, error.message
    if due > give_up:
        message = (
            f"gave up after {settings.retry.give_up_after_h:g} h of retries; "
            f"last error: {error.message}"
        )
        service.job_due_at = now if newer else None
        _fail(events, error.reason, message)
        return _Decision("failed", error.reason, message)
    service.job_due_at = due
    for event in events:
        if event.status is not EventStatus.FAILED:
            event.status = EventStatus.QUEUED
            event.reason, event.message = error.reason, error.message
    return _Decision("retry", error.reason, error.message)


def _permanent(
    service: Service, events: list[Event], error: PermanentError, now: datetime, newer: bool
) -> _Decision:
    """A person must act: the events fail with the reason; a newer change is still tried."""
    service.last_reason, service.last_message = error.reason, error.message
    service.attempt_count = 0
    service.first_failure_at = None
    service.job_due_at = now if newer else None
    _fail(events, error.reason, error.message)
    return _Decision("failed", error.reason, error.message)


def _replaced(event: Event, events: list[Event]) -> bool:
    """True when a newer event of the batch sets everything this one set."""
    mine = _ASPECTS.get(event.action or "", set())
    newer = set().union(
        *(
            _ASPECTS.get(e.action or "", set())
            for e in events
            if (e.generation or 0) > (event.generation or 0)
        )
    )
    return bool(mine) and mine <= newer


def _fail(events: list[Event], reason: str, message: str) -> None:
    for event in events:
        event.status, event.finished_at = EventStatus.FAILED, utcnow()
        event.reason, event.message = reason, message


def log_event(fields: dict[str, object]) -> None:
    """The one line per event outcome: id, service, action, status and reason."""
    log.info(
        "event %(event_id)s source=%(source)s service=%(service)s action=%(action)s "
        "status=%(status)s reason=%(reason)s",
        fields,
        extra={"fields": fields},
    )
