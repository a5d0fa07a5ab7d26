"""Desired vs actual for one service, field by field, for the event and service pages.

This is the engine's dry run (`provisioning.jobs.inspect`) with the account kept: the same
snapshot and the same pure `plan()`, but the DomainAdmin read from the mail server is returned
too, so staff see every value (and the usage behind a refused downgrade), not only the
differences. The read is bounded by READ_BUDGET_S so a hung mail server cannot hang the page.

Staff reads never spend provisioning's rate budget: a fresh read goes through
`rt.staff_mailserver` (its own small share of the rate) and is stored with its time
(`AccountRead`, without secrets); the console shows the stored read (`fresh=False`) and reads
again only when a person asks for it.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from bridge.config import Settings
from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import ServiceState
from bridge.mailserver import Account, DomainAdmin, TransientError
from bridge.mailserver.ratelimit import DeadlineExceeded
from bridge.mappings import Resolution, resolve
from bridge.models import AccountRead, Service
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
    read: bool = False  # the mail server answered (now, or at read_at)
    read_error: BridgeError | None = None
    read_at: datetime | None = None  # when the account shown was read
    read_by: str | None = None
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


def account_json(account: DomainAdmin | Account | None) -> dict[str, Any] | None:
    """What is kept of a read account: its observed state, never its password hash."""
    if account is None:
        return None
    if isinstance(account, Account):
        return {"perm_level": account.perm_level, "username": account.username}
    return {
        "perm_level": "DomainAdmin",
        "username": account.username,
        "enabled": account.enabled,
        "recovery_email": account.recovery_email,
        "domains": list(account.domains),
        "limits": dict(account.limits),
        "used": dict(account.used),
    }


def account_from_json(data: dict[str, Any] | None) -> DomainAdmin | Account | None:
    """The inverse of account_json."""
    if data is None:
        return None
    if data.get("perm_level") != "DomainAdmin":
        return Account(str(data.get("username", "")), str(data.get("perm_level", "")), {})
    return DomainAdmin(
        username=str(data["username"]),
        enabled=bool(data.get("enabled")),
        recovery_email=str(data.get("recovery_email") or ""),
        domains=tuple(data.get("domains") or ()),
        limits={k: int(v) for k, v in (data.get("limits") or {}).items()},
        used={k: int(v) for k, v in (data.get("used") or {}).items()},
    )


def staff_read(
    rt: Runtime, username: str, target: str | None
) -> tuple[DomainAdmin | Account | None, DomainAdmin | Account | None]:
    """Read an account (and a transfer's receiver) for staff, from the staff share of the
    rate; refused without a call while provisioning's gate is paused (a 429 or an open
    circuit pauses staff reads too)."""
    gate = rt.mailserver.limiter.state() if rt.mailserver.limiter is not None else None
    now = time.time()
    if gate is not None and (gate.circuit_open(now) or gate.blocked_until > now):
        until = max(gate.open_until, gate.blocked_until)
        raise TransientError(
            "mailserver_paused",
            f"the bridge is pausing its calls to the mail server for {until - now:.0f} s more; "
            "refresh after that",
        )
    client = rt.staff_mailserver.client(time.monotonic() + READ_BUDGET_S)
    try:
        actual = client.find_domainadmin(username)
        return actual, client.find_domainadmin(target) if target else None
    except DeadlineExceeded:
        raise TransientError(
            "staff_reads_busy",
            "other staff reads are using the mail-server budget kept for people; "
            "refresh again in a few seconds",
        ) from None


def _remember(
    rt: Runtime,
    service_id: int,
    username: str,
    read: tuple[DomainAdmin | Account | None, DomainAdmin | Account | None],
    now: datetime,
    who: str | None,
) -> None:
    """Store this read as the service's last one (two refreshes at once: one of them wins)."""
    with suppress(IntegrityError), rt.transaction() as session:
        row = session.get(AccountRead, service_id, with_for_update=True)
        if row is None:
            if session.get(Service, service_id) is None:
                return  # deleted meanwhile
            row = AccountRead(service_id=service_id)
            session.add(row)
        row.username, row.read_at, row.read_by = username, now, who
        row.account, row.target = account_json(read[0]), account_json(read[1])


def compare(
    rt: Runtime,
    service_id: int,
    now: datetime | None = None,
    *,
    fresh: bool = True,
    who: str | None = None,
) -> Comparison:
    """Plan a reconcile without running it, against the service's DomainAdmin: read now
    (`fresh`, from the staff share of the rate, and stored as the last read by `who`), or
    as last read (no call; `read` stays False if it was never read)."""
    now = now or utcnow()
    settings = rt.settings
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
        stored = None if fresh else session.get(AccountRead, service_id)
    desired = c.desired
    name = desired.username if desired is not None else username
    target_name = None
    if desired is not None and desired.transfer_to_ref is not None:
        target_name = desired.transfer_to_username
    target: DomainAdmin | Account | None = None
    if name and fresh:
        try:
            c.actual, target = staff_read(rt, name, target_name)
            c.read, c.read_at, c.read_by = True, now, who
        except BridgeError as exc:
            c.read_error = exc
        else:
            _remember(rt, service_id, name, (c.actual, target), now, who)
    elif name and stored is not None and stored.username.lower() == name.lower():
        c.actual, target = account_from_json(stored.account), account_from_json(stored.target)
        c.read, c.read_at, c.read_by = True, stored.read_at, stored.read_by
    if desired is None:
        # Without a bundle there is no plan, but whether the account exists still helps.
        if username:
            c.rows = _basic_rows(c, state, gone=state is ServiceState.TERMINATED)
        return c
    if not desired.username:
        c.plan_error = BridgeError(
            "not_provisioned",
            "no username is known for this service: the billing system has not sent a create",
        )
    elif c.read:
        try:
            c.plan = plan(desired, c.actual, now, target)
        except BridgeError as exc:
            c.plan_error = exc
    c.rows = _rows(c, settings, now)
    return c


def describe_error(exc: BridgeError) -> dict[str, Any]:
    """An error as the pages and the API show it."""
    message = exc.message
    if exc.reason == "inline_timeout":
        message = f"the mail server did not answer within {READ_BUDGET_S:g} s"
    return {"reason": exc.reason, "message": message}
