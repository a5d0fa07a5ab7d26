"""The audit log: who did what, when, through which surface (web, api, cli)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bridge.models import AuditEntry

#: The actions written to the log.
ACTIONS = (
    "login",
    "login_failed",
    "logout",
    "retry",
    "bulk_retry",
    "resolve",
    "reconcile",
    "staff_added",
    "token_issued",
    "token_revoked",
    "link",
    "relink",
    "staff_disabled",
    "staff_enabled",
    "staff_role_changed",
    "staff_password_reset",
    "staff_removed",
    "import",
)


def record(
    session: Session,
    action: str,
    *,
    actor: str,
    via: str,
    now: datetime,
    staff_id: int | None = None,
    event_id: int | None = None,
    service_id: int | None = None,
    ip: str | None = None,
    **detail: Any,
) -> AuditEntry:
    """Add one audit row to the session; the caller commits with the action itself."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    entry = AuditEntry(
        at=now,
        actor=actor[:320],
        staff_id=staff_id,
        via=via,
        action=action,
        event_id=event_id,
        service_id=service_id,
        ip=ip[:64] if ip else None,
        detail={k: v for k, v in detail.items() if v is not None},
    )
    session.add(entry)
    return entry


def for_event(
    session: Session, event_id: int, service_id: int | None, limit: int = 100
) -> list[AuditEntry]:
    """Entries about an event, and service-wide ones (retries, reconciles) of its service."""
    condition = AuditEntry.event_id == event_id
    if service_id is not None:
        condition = or_(condition, AuditEntry.service_id == service_id)
    query = select(AuditEntry).where(condition).order_by(AuditEntry.id.desc()).limit(limit)
    return list(session.scalars(query))


def for_service(session: Session, service_id: int, limit: int = 100) -> list[AuditEntry]:
    """Entries about a service and its events, newest first."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.service_id == service_id)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def recent(session: Session, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
    """The newest entries, keyset-paginated by id."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return list(session.scalars(query))


def _service(entry: AuditEntry) -> str:
    """How people name the service: `whmcs:1002` (its internal id once it is gone)."""
    service = entry.service
    return service.label if service is not None else f"service #{entry.service_id}"


def describe(entry: AuditEntry) -> str:
    """One line for people."""
    d = entry.detail or {}
    if entry.action == "retry":
        base = f"retry of {_service(entry)}"
        if d.get("requeued") is not None:
            base += f" ({d['requeued']} failed event(s) queued again)"
        if d.get("outcome"):
            base += f": {d['outcome']}"
            if d.get("reason"):
                base += f" ({d['reason']})"
        return base + (" [bulk]" if d.get("bulk") else "")
    if entry.action == "bulk_retry":
        return (
            f"bulk retry: {d.get('services', 0)} service(s), {d.get('events', 0)} event(s); "
            f"filter {d.get('filter') or {}}"
        )
    if entry.action == "resolve":
        return "marked resolved" + (f": {d['note']}" if d.get("note") else "")
    if entry.action == "reconcile":
        tail = f" ({d['reason']})" if d.get("reason") else ""
        return f"reconcile now: {d.get('outcome', '?')}{tail}"
    if entry.action in ("link", "relink"):
        was = f" (was {d['previous']})" if d.get("previous") else ""
        return (
            f"{entry.action}ed to DomainAdmin {d.get('username', '?')}{was}: recovery e-mail "
            f"{d.get('recovery_email') or '(none)'}, domains {d.get('domains') or '(none)'}"
        )
    if entry.action == "login_failed":
        return f"login refused: {d.get('reason', '?')} for {d.get('email', '?')}"
    if entry.action == "staff_role_changed":
        return f"role of {d.get('email', '?')}: {d.get('was', '?')} -> {d.get('role', '?')}"
    if entry.action.startswith("staff_"):
        what = entry.action.removeprefix("staff_").replace("_", " ")
        return f"staff {d.get('email', '?')} {what}"
    if entry.action == "import":
        tail = f", then reconciled: {d['outcome']}" if d.get("outcome") else ""
        return f"imported: bound to DomainAdmin {d.get('username', '?')}{tail}"
    if entry.action in ("token_issued", "token_revoked"):
        return f"{entry.action.replace('_', ' ')}: {d.get('tokens') or d.get('token') or ''}"
    return entry.action.replace("_", " ")
