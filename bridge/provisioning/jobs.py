"""Reconcile jobs: one per service, claimed with a lease, retried with backoff.

A service row is its own job (`job_due_at`, `lease_owner`, `lease_expires_at`). Claims use
`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite every write transaction starts with
BEGIN IMMEDIATE, so two local processes cannot claim the same row. Network calls happen
outside any transaction; only the snapshot, the suspend memory and the outcome are written.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import EventStatus
from bridge.mailserver import MailServerClient, PermanentError, TransientError
from bridge.models import Event, Service
from bridge.provisioning.desired import snapshot
from bridge.provisioning.outcome import Attempted, Outcome, finish
from bridge.provisioning.reconcile import Desired, Plan, execute, plan
from bridge.runtime import Runtime

#: Service columns a plan may store before the call that makes them true.
REMEMBERED = ("suspended_accounts", "created_as_email")


def worker_id() -> str:
    """Who holds a lease: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def claim(rt: Runtime, now: datetime, owner: str, service_id: int | None = None) -> int | None:
    """Lease the most overdue service (or this one) whose job is due; None when none is."""
    with rt.transaction() as session:
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
        service.lease_expires_at = now + timedelta(seconds=rt.settings.retry.lease_s)
        return service.id


def read_and_plan(client: MailServerClient, desired: Desired, now: datetime) -> Plan:
    """Read the DomainAdmin (and a transfer's receiver) and plan the calls."""
    actual = client.find_domainadmin(desired.username) if desired.username else None
    target = None
    if desired.transfer_to_username:
        target = client.find_domainadmin(desired.transfer_to_username)
    return plan(desired, actual, now, target)


def reconcile_service(
    rt: Runtime,
    service_id: int,
    owner: str,
    now: datetime | None = None,
    deadline: float | None = None,
) -> Outcome:
    """Reconcile one leased service and record the outcome; never raises for mail-server errors."""
    now = now or utcnow()
    client = rt.mailserver.client(deadline)
    desired: Desired | None = None

    def attempted(
        error: TransientError | PermanentError | None = None,
        done: Plan | None = None,
        record: dict[str, Any] | None = None,
    ) -> Attempted:
        return Attempted(
            service_id, owner, now, desired, client.calls, client.write_calls, error, done, record
        )

    try:
        with rt.transaction() as session:
            service = session.get(Service, service_id)
            if service is None or service.lease_owner != owner:
                return Outcome(service_id, "busy", "lease_lost", "another process holds it")
            desired = snapshot(session, service, rt.settings)
        result_plan = read_and_plan(client, desired, now)

        def remember(column: str, value: object) -> None:
            if column not in REMEMBERED:
                raise ValueError(column)
            with rt.transaction() as session:
                row = session.get(Service, service_id)
                if row is not None:
                    setattr(row, column, value)

        record = execute(desired, result_plan.steps, client, remember)
    except TransientError as exc:
        return finish(rt, attempted(error=exc))
    except BridgeError as exc:
        permanent = (
            exc if isinstance(exc, PermanentError) else PermanentError(exc.reason, exc.message)
        )
        return finish(rt, attempted(error=permanent))
    return finish(rt, attempted(done=result_plan, record=record))


def run_once(rt: Runtime, now: datetime | None = None, owner: str | None = None) -> Outcome | None:
    """Claim and reconcile one due service; None when nothing is due."""
    now = now or utcnow()
    owner = owner or worker_id()
    service_id = claim(rt, now, owner)
    if service_id is None:
        return None
    return reconcile_service(rt, service_id, owner, now)


def run_inline(rt: Runtime, service_id: int) -> Outcome:
    """Reconcile a service within the request, bounded by intake.inline_timeout_s."""
    owner = worker_id()
    now = utcnow()
    if claim(rt, now, owner, service_id) is None:
        return Outcome(
            service_id,
            "busy",
            "service_busy",
            "another process is reconciling this service; the worker will finish",
        )
    deadline = time.monotonic() + rt.settings.intake.inline_timeout_s
    return reconcile_service(rt, service_id, owner, now, deadline)


@dataclass(frozen=True)
class Inspection:
    """Desired vs actual for one service, and what a reconcile would do."""

    service_id: int
    label: str
    plan: Plan | None
    error: BridgeError | None


def inspect(rt: Runtime, service_id: int, now: datetime | None = None) -> Inspection:
    """Read the DomainAdmin and plan, without changing anything (the dry run)."""
    now = now or utcnow()
    with rt.reads() as session:
        service = session.get(Service, service_id)
        if service is None:
            raise LookupError(service_id)
        label = f"{service.source}:{service.service_ref}"
        try:
            desired = snapshot(session, service, rt.settings)
        except BridgeError as exc:
            return Inspection(service_id, label, None, exc)
    try:
        found = read_and_plan(rt.mailserver.client(), desired, now)
        return Inspection(service_id, label, found, None)
    except BridgeError as exc:
        return Inspection(service_id, label, None, exc)


def reconcile_now(rt: Runtime, service_id: int) -> Outcome:
    """Reconcile one service at once (staff or CLI), whether or not its job is due."""
    owner = worker_id()
    now = utcnow()
    with rt.transaction() as session:
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
    if claim(rt, now, owner, service_id) is None:
        return Outcome(service_id, "busy", "service_busy", "another process claimed it first")
    return reconcile_service(rt, service_id, owner, now)


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
