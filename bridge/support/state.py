"""Desired vs actual for one service, field by field, for the event and service pages.

This is the engine's dry run (`provisioning.jobs.inspect`) with the account kept: the same
snapshot and the same pure `plan()`, but the DomainAdmin read from the mail server is returned
too, so staff see every value (and the usage behind a refused downgrade), not only the
differences. The read is bounded by READ_BUDGET_S so a hung mail server cannot hang the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.config import Settings
from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import ServiceState
from bridge.mailserver import Account, DomainAdmin
from bridge.mappings import Resolution, resolve
from bridge.models import Service
from bridge.provisioning.desired import snapshot
from bridge.provisioning.reconcile import Desired, Plan, plan
from bridge.runtime import Runtime

READ_BUDGET_S = 10.0
QUOTA_LABELS = {
    "domains": "domains (incl. relay)",
    "domain_aliases": "domain aliases",
    "aliases": "aliases (incl. senders)",
    "mailboxes": "mailboxes",
    "storage_mb": "storage MB",
}


@dataclass(frozen=True)
class Row:
    """One field: what billing wants, what the mail server has, and whether they differ."""

    label: str
    desired: str
    actual: str
    differs: bool


@dataclass
class Comparison:
    """Everything the pages show about a service's state."""

    resolution: Resolution | None = None
    bundle_error: BridgeError | None = None
    desired: Desired | None = None
    desired_error: BridgeError | None = None
    actual: DomainAdmin | Account | None = None
    read: bool = False  # the mail server answered
    read_error: BridgeError | None = None
    plan: Plan | None = None
    plan_error: BridgeError | None = None
    rows: list[Row] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """True when a reconcile now would change nothing."""
        return self.plan is not None and not self.plan.steps and not self.plan.drift

    @property
    def drift_fields(self) -> list[str]:
        """Names of the fields that differ, as the engine sees them."""
        return [d.field for d in self.plan.drift] if self.plan else []


def _quota(value: int | None, unlimited: int | None) -> str:
    if value is None:
        return "—"
    if unlimited is not None and value == unlimited:
        return f"unlimited ({value})"
    return str(value)


def _basic_rows(c: Comparison, state: ServiceState | None, gone: bool) -> list[Row]:
    want_exists = state is not None and not gone
    actual = c.actual
    if isinstance(actual, Account):
        have = f"taken by a {actual.perm_level}"
    else:
        have = "yes" if actual is not None else "no"
    rows = [
        Row(
            "DomainAdmin exists",
            "yes" if want_exists else "no",
            have if c.read else "unknown",
            c.read and (have != ("yes" if want_exists else "no")),
        )
    ]
    da = actual if isinstance(actual, DomainAdmin) else None
    if state is not None and not gone:
        want = "enabled" if state is ServiceState.ACTIVE else "disabled"
        have = ("enabled" if da.enabled else "disabled") if da else "—"
        rows.append(Row("state", f"{want} ({state.value})", have, da is not None and want != have))
    return rows


def _rows(c: Comparison, settings: Settings, now: datetime) -> list[Row]:
    d = c.desired
    if d is None:
        return []
    unlimited = settings.mailserver.unlimited_value
    gone = d.state is ServiceState.TERMINATED and d.delete_at is not None and d.delete_at <= now
    rows = _basic_rows(c, d.state, gone)
    da = c.actual if isinstance(c.actual, DomainAdmin) else None
    if d.limits is not None and d.state is not ServiceState.TERMINATED:
        for name, label in QUOTA_LABELS.items():
            want_n = d.limits.get(name)
            have_n = da.limits.get(name) if da else None
            shown = _quota(have_n, unlimited)
            if da is not None:
                shown += f", {da.used[name]} used" if name in da.used else ", usage unknown"
            rows.append(
                Row(label, _quota(want_n, unlimited), shown, da is not None and want_n != have_n)
            )
    if d.recovery_email:
        have = da.recovery_email if da else "—"
        rows.append(
            Row(
                "recovery e-mail",
                d.recovery_email,
                have or "(none)",
                da is not None and have.lower() != d.recovery_email.lower(),
            )
        )
    if d.password_pending:
        rows.append(Row("password", "new from billing (hash)", "older", da is not None))
    if d.transfer_to_ref is not None:
        rows.append(
            Row(
                "owner of its domains",
                d.transfer_to_username or f"service {d.transfer_to_ref}",
                ", ".join(da.domains) if da and da.domains else "(no domains left)",
                da is not None and bool(da.domains),
            )
        )
    if da is not None:
        rows.append(Row("domains", "—", ", ".join(da.domains) or "(none)", False))
    return rows


def compare(rt: Runtime, service_id: int, now: datetime | None = None) -> Comparison:
    """Read the service's DomainAdmin and plan a reconcile without running it."""
    now = now or utcnow()
    settings, server = rt.settings, rt.mailserver
    c = Comparison()
    with rt.reads() as session:
        service = session.get(Service, service_id)
        if service is None:
            raise LookupError(service_id)
        if service.product_id or service.tier_key:
            try:
                c.resolution = resolve(
                    settings.mappings,
                    service.source,
                    service.product_id,
                    service.tier_key,
                    service.addons,
                )
            except BridgeError as exc:
                c.bundle_error = exc
        username, state = service.username, service.desired_state
        try:
            c.desired = snapshot(session, service, settings)
        except BridgeError as exc:
            c.desired_error = exc
    if c.desired is None:
        # Without a bundle there is no plan, but whether the account exists still helps.
        if username:
            try:
                c.actual = server.client(time.monotonic() + READ_BUDGET_S).find_domainadmin(
                    username
                )
                c.read = True
            except BridgeError as exc:
                c.read_error = exc
            c.rows = _basic_rows(c, state, gone=state is ServiceState.TERMINATED)
        return c
    desired = c.desired
    if desired.username:
        client = server.client(time.monotonic() + READ_BUDGET_S)
        try:
            c.actual = client.find_domainadmin(desired.username)
            target = None
            if desired.transfer_to_ref is not None and desired.transfer_to_username:
                target = client.find_domainadmin(desired.transfer_to_username)
            c.read = True
        except BridgeError as exc:
            c.read_error = exc
        if c.read:
            try:
                c.plan = plan(desired, c.actual, now, target)
            except BridgeError as exc:
                c.plan_error = exc
    else:
        c.plan_error = BridgeError(
            "not_provisioned",
            "no username is known for this service: the billing system has not sent a create",
        )
    c.rows = _rows(c, settings, now)
    return c


def describe_error(exc: BridgeError) -> dict[str, Any]:
    """An error as the pages and the API show it."""
    message = exc.message
    if exc.reason == "inline_timeout":
        message = f"the mail server did not answer within {READ_BUDGET_S:g} s"
    return {"reason": exc.reason, "message": message}
