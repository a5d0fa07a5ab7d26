"""Read what each bound service's DomainAdmin uses into `service_usage` (docs/design.md#usage).

`bridge worker` calls `refresh_if_due()` between reconciles. The due time lives in the
database (`worker_schedule`), so with several workers one of them does each refresh. A refresh
pages through the server's DomainAdmins, 50 a call: the account rows (limits and `*_used`
counters) and `GET /api/v1/stats/quota/` (storage). Every call goes through the shared rate
limiter, so a refresh never pushes the bridge above `mailserver.rate_limit_per_s`. Only a
service bound to its DomainAdmin (docs/design.md#binding) gets figures, matched by the exact
username: a DomainAdmin the bridge does not own is never read into a service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bridge.db import utcnow
from bridge.mailserver import MailServerClient, MailServerError
from bridge.mailserver.client import PAGE, AdminUsage
from bridge.models import Schedule, Service, Usage
from bridge.runtime import Runtime

log = logging.getLogger(__name__)

TASK = "usage_refresh"
#: After a failed refresh (mail server down, circuit open), try again this much later.
RETRY_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did."""

    services: int
    calls: int
    unseen: int


def claim_due(rt: Runtime, now: datetime, every: timedelta) -> bool:
    """Take the refresh if it is due: move its due time on first, so no other worker runs it."""
    try:
        with rt.transaction() as session:
            row = session.get(Schedule, TASK, with_for_update=True)
            if row is None:
                session.add(Schedule(name=TASK, due_at=now + every, last_run_at=now))
                return True
            if row.due_at > now:
                return False
            row.due_at = now + every
            row.last_run_at = now
            return True
    except IntegrityError:  # another worker inserted the row first: it runs this one
        return False


def _record(rt: Runtime, result: str, due_at: datetime | None = None) -> None:
    with rt.transaction() as session:
        row = session.get(Schedule, TASK)
        if row is not None:
            row.last_result = result[:1000]
            if due_at is not None:
                row.due_at = due_at


def _read_all(
    client: MailServerClient,
) -> tuple[dict[str, AdminUsage], dict[str, AdminUsage]]:
    """Every DomainAdmin's account row and stats row, by lower-cased username."""
    accounts: dict[str, AdminUsage] = {}
    stats: dict[str, AdminUsage] = {}
    for read, into in (
        (client.domainadmin_usage_page, accounts),
        (client.storage_stats_page, stats),
    ):
        start = 0
        while True:
            page = read(start)
            for row in page:
                into.setdefault(row.username.lower(), row)
            if len(page) < PAGE:
                break
            start += PAGE
    return accounts, stats


def refresh(rt: Runtime, now: datetime | None = None) -> Refreshed:
    """Read usage for every bound service now; raises MailServerError when the server fails."""
    now = now or utcnow()
    with rt.reads() as session:
        bound = session.execute(
            select(Service.id, Service.username).where(
                Service.bound_at.is_not(None), Service.username.is_not(None)
            )
        ).all()
    client = rt.mailserver.client()
    accounts, stats = _read_all(client) if bound else ({}, {})
    written = unseen = 0
    with rt.transaction() as session:
        for service_id, username in bound:
            account = accounts.get(str(username).lower())
            if account is None:
                unseen += 1  # deleted, renamed or not yet created: keep the last figures
                continue
            storage = stats.get(str(username).lower())
            used = account.used["storage_mb"]
            total = account.limits["storage_mb"]
            if storage is not None:
                used = (
                    storage.used["storage_mb"] if storage.used["storage_mb"] is not None else used
                )
                total = storage.limits["storage_mb"] or total
            row = session.get(Usage, service_id) or Usage(service_id=service_id)
            row.username = account.username
            row.storage_used_mb = used
            row.storage_total_mb = total
            row.mailboxes_used = account.used["mailboxes"]
            row.mailboxes_limit = account.limits["mailboxes"]
            row.domains_used = account.used["domains"]
            row.domains_limit = account.limits["domains"]
            row.aliases_used = account.used["aliases"]
            row.aliases_limit = account.limits["aliases"]
            row.read_at = now
            session.add(row)
            written += 1
    return Refreshed(services=written, calls=len(client.calls), unseen=unseen)


def refresh_if_due(rt: Runtime, now: datetime | None = None) -> Refreshed | None:
    """Run a refresh when `usage.refresh_h` has passed since the last one; never raises for
    mail-server failures (they are logged and the refresh is tried again in 15 minutes)."""
    now = now or utcnow()
    every = timedelta(hours=rt.settings.usage.refresh_h)
    if not claim_due(rt, now, every):
        return None
    try:
        done = refresh(rt, now)
    except MailServerError as exc:
        log.warning("usage refresh failed: %s (%s); next try in 15 min", exc.message, exc.reason)
        _record(rt, f"failed: {exc.reason}: {exc.message}", due_at=now + RETRY_AFTER)
        return None
    log.info(
        "usage refreshed services=%d calls=%d not_on_server=%d",
        done.services,
        done.calls,
        done.unseen,
    )
    _record(rt, f"ok: {done.services} services, {done.calls} calls, {done.unseen} not on server")
    return done
