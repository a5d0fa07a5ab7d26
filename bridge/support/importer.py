"""Adopting accounts that already exist (made by the deprecated plugin or by hand).

Import never creates twice and never deletes: it links billing services to the DomainAdmins
already on the mail server, records their desired state from billing, and reports drift.
Only `--apply` reconciles the drift. The server's DomainAdmins are listed once, page by page
(about one call per 50 accounts), so a large import stays far below the rate limit.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.ledger import lock_service
from bridge.lifecycle import ServiceState
from bridge.mailserver import DomainAdmin, MailServer
from bridge.models import Service
from bridge.provisioning.desired import snapshot
from bridge.provisioning.reconcile import plan
from bridge.runtime import Runtime
from bridge.support.actions import Actor, reconcile

#: WHMCS export column names we accept for each field (case and spaces ignored).
COLUMNS = {
    "service_ref": ("id", "serviceid", "service id", "service_id"),
    "product_id": ("pid", "product id", "productid", "packageid", "product_id"),
    "client_ref": ("userid", "client id", "clientid", "client_id"),
    "client_email": ("email", "client email", "clientemail", "client_email"),
    "username": ("username",),
    "status": ("status", "domainstatus"),
    "domain": ("domain",),
    # Optional, for the migration checklist (docs/migrating-from-mailcheap-plugin.md):
    "server_module": ("server module", "servermodule", "server_module", "module", "servertype"),
    "tier_key": ("configoption1", "tier key", "tier_key"),
}
#: The WHMCS module name of mailbridge (modules/servers/mailbridge).
WHMCS_MODULE = "mailbridge"
#: Services the checklist leaves out: gone for good in WHMCS.
CHECKLIST_SKIPPED = {"terminated", "cancelled", "canceled", "fraud"}
STATES = {"active": ServiceState.ACTIVE, "suspended": ServiceState.SUSPENDED}
SKIPPED_STATUSES = {"pending", "terminated", "cancelled", "canceled", "fraud", "completed"}


class CsvImportError(BridgeError):
    """The CSV cannot be read as a services export."""


@dataclass(frozen=True)
class Row:
    """One billing service from the export."""

    line: int
    service_ref: str
    product_id: str
    client_ref: str | None
    client_email: str | None
    username: str
    status: str
    domain: str | None
    addons: dict[str, str] = field(default_factory=dict)
    server_module: str | None = None
    tier_key: str | None = None


@dataclass(frozen=True)
class Result:
    """What happened to one row."""

    line: int
    service_ref: str
    username: str
    outcome: str  # adopted | already_linked | missing_on_server | skipped | error
    drift: tuple[str, ...] = ()
    message: str = ""


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


def read_whmcs_csv(text: str, addon_names: Iterable[str]) -> list[Row]:
    """Parse a WHMCS products/services export; columns named after add-ons give quantities."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not reader.fieldnames:
        raise CsvImportError("empty_csv", "the CSV has no header row")
    header = {_norm(h): h for h in reader.fieldnames if h}
    found: dict[str, str] = {}
    for key, names in COLUMNS.items():
        for name in names:
            if _norm(name) in header:
                found[key] = header[_norm(name)]
                break
    missing = [k for k in ("service_ref", "product_id", "username", "status") if k not in found]
    if missing:
        raise CsvImportError(
            "csv_columns_missing",
            f"the CSV lacks column(s) for {', '.join(missing)}; expected e.g. "
            + ", ".join(COLUMNS[k][0] for k in missing),
        )
    addon_columns = {n: header[_norm(n)] for n in addon_names if _norm(n) in header}
    rows = []
    for number, record in enumerate(reader, start=2):

        def get(key: str, record: dict[str, Any] = record) -> str | None:
            value = (record.get(found[key]) or "").strip() if key in found else ""
            return value or None

        rows.append(
            Row(
                line=number,
                service_ref=get("service_ref") or "",
                product_id=get("product_id") or "",
                client_ref=get("client_ref"),
                client_email=get("client_email"),
                username=(get("username") or "").lower(),
                status=(get("status") or "").lower(),
                domain=get("domain"),
                addons={n: (record.get(c) or "0").strip() for n, c in addon_columns.items()},
                server_module=get("server_module"),
                tier_key=get("tier_key"),
            )
        )
    return rows


def server_index(server: MailServer) -> dict[str, DomainAdmin]:
    """Every DomainAdmin on the server by lower-case username (one call per 50)."""
    client = server.client()
    return {da.username.lower(): da for da in client.list_domainadmins()}


def import_row(
    rt: Runtime,
    source: str,
    row: Row,
    index: dict[str, DomainAdmin],
    apply: bool,
    actor: Actor | None = None,
) -> Result:
    """Link one billing service to its DomainAdmin and record its desired state; the link
    and an `--apply` reconcile are audited as `actor`'s."""
    actor = actor or Actor("bridge import", "cli")
    if not row.service_ref or not row.username:
        return Result(
            row.line,
            row.service_ref,
            row.username,
            "error",
            message="service id and username are required",
        )
    if row.status in SKIPPED_STATUSES or row.status not in STATES:
        return Result(
            row.line,
            row.service_ref,
            row.username,
            "skipped",
            message=f'status "{row.status}" is not imported (only Active, Suspended)',
        )
    actual = index.get(row.username)
    now = utcnow()
    with rt.transaction() as session:
        existing = session.scalar(
            select(Service).where(Service.source == source, Service.service_ref == row.service_ref)
        )
        linked_before = existing is not None and existing.bound
        service = lock_service(session, source, row.service_ref)
        if service.generation == 0 or not linked_before:
            service.username = row.username
            service.domain = row.domain
            service.client_ref = row.client_ref
            service.client_email = row.client_email
            service.product_id = row.product_id
            service.addons = row.addons
            # configoption1 names the tier only when it is one (the old plugin kept a quota there)
            service.tier_key = row.tier_key if row.tier_key in rt.settings.mappings.tiers else None
            service.desired_state = STATES[row.status]
            service.aspect_times = {a: now.isoformat() for a in ("lifecycle", "package", "owner")}
            service.generation = max(service.generation, 1)
        if actual is None:
            return Result(
                row.line,
                row.service_ref,
                row.username,
                "missing_on_server",
                message="no DomainAdmin of this name on the mail server",
            )
        if not linked_before:
            service.applied_generation = service.generation  # linked: it is ours now
            service.bound_how, service.bound_at, service.bound_by = "imported", now, actor.name
            actor.audit(
                session,
                "import",
                now,
                service_id=service.id,
                username=row.username,
                source=source,
                line=row.line,
            )
        service_id = service.id
        try:
            desired = snapshot(session, service, rt.settings)
        except BridgeError as exc:
            return Result(
                row.line,
                row.service_ref,
                row.username,
                "error",
                message=f"{exc.reason}: {exc.message}",
            )
        found = plan(desired, actual, now)
        drift = tuple(f"{d.field}: billing {d.desired}, server {d.actual}" for d in found.drift)
        if drift and not apply:
            service.generation = service.applied_generation + 1  # visible as not in sync
    outcome = "already_linked" if linked_before else "adopted"
    if drift and apply:
        result = reconcile(rt, service_id, actor)
        if result.status != "applied":
            return Result(
                row.line,
                row.service_ref,
                row.username,
                "error",
                drift,
                f"{result.reason}: {result.message}",
            )
    return Result(row.line, row.service_ref, row.username, outcome, drift)


def unknown_to_billing(
    rt: Runtime,
    source: str,
    index: dict[str, DomainAdmin],
) -> list[str]:
    """DomainAdmins on the server that no service of any source names."""
    return compare_server(rt, source, index).unknown


@dataclass(frozen=True)
class ServerComparison:
    """The server's DomainAdmins against the ledger, from one source's point of view."""

    source: str
    #: usernames named by a service of this source -> its label (whmcs:1001)
    linked: dict[str, str]
    #: usernames named by a service of another source -> its label (blesta:7)
    other_source: dict[str, str]
    #: usernames no service of any source names
    unknown: list[str]
    #: this source's services (not terminated) whose DomainAdmin is not on the server
    missing_on_server: dict[str, str]


def compare_server(rt: Runtime, source: str, index: dict[str, DomainAdmin]) -> ServerComparison:
    """Sort the server's DomainAdmins: this source's, another source's, nobody's; and this
    source's services whose account is missing. Reads only; changes nothing."""
    with rt.reads() as session:
        rows = session.execute(
            select(Service.source, Service.service_ref, Service.username, Service.desired_state)
        ).all()
    mine: dict[str, str] = {}
    others: dict[str, str] = {}
    missing: dict[str, str] = {}
    for src, ref, username, state in rows:
        if not username:
            continue
        name = username.lower()
        if src == source:
            mine.setdefault(name, f"{src}:{ref}")
            if name not in index and state is not ServiceState.TERMINATED:
                missing[f"{src}:{ref}"] = name
        else:
            others.setdefault(name, f"{src}:{ref}")
    return ServerComparison(
        source=source,
        linked={u: mine[u] for u in sorted(index) if u in mine},
        other_source={u: others[u] for u in sorted(index) if u not in mine and u in others},
        unknown=sorted(u for u in index if u not in mine and u not in others),
        missing_on_server=dict(sorted(missing.items())),
    )


def summarize(results: Iterable[Result]) -> Counter[str]:
    """Counts per outcome, plus how many rows drift."""
    counts: Counter[str] = Counter()
    for result in results:
        counts[result.outcome] += 1
        if result.drift:
            counts["drift"] += 1
    return counts


def batches(rows: list[Row], size: int) -> Iterator[list[Row]]:
    """Rows in chunks of `size`."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass(frozen=True)
class ChecklistItem:
    """A migration step still to do for a service or a product (guide step 4)."""

    check: str  # old_module | stale_tier_key
    step: str
    product_id: str
    service_refs: tuple[str, ...]
    value: str
    message: str


def checklist(rows: Iterable[Row], tiers: Iterable[str]) -> list[ChecklistItem]:
    """What the export shows is not switched yet: services whose server entry still uses
    another module (guide step 4a), and products whose Tier key (configoption1) is not a tier
    of the bridge (step 4c, e.g. the old plugin's storage quota). Only the columns present in
    the export are checked; terminated, cancelled and fraud services are left out."""
    known = set(tiers)
    old_module: list[Row] = []
    stale: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row.status in CHECKLIST_SKIPPED:
            continue
        if row.server_module is not None and row.server_module.strip().lower() != WHMCS_MODULE:
            old_module.append(row)
        if row.tier_key is not None and row.tier_key not in known:
            stale.setdefault((row.product_id, row.tier_key), []).append(row.service_ref)
    items = [
        ChecklistItem(
            "old_module",
            "4a",
            row.product_id,
            (row.service_ref,),
            row.server_module or "",
            f"service {row.service_ref} ({row.username}) is on a server entry of module "
            f'"{row.server_module}": edit that server entry to Mail Bridge, or move the service '
            "to the bridge's server entry",
        )
        for row in old_module
    ]
    for (product, value), refs in sorted(stale.items()):
        items.append(
            ChecklistItem(
                "stale_tier_key",
                "4c",
                product,
                tuple(refs),
                value,
                f'product {product}: its Tier key (configoption1) "{value}" is not a tier of the '
                f"bridge ({len(refs)} service(s)); clear it in the product's Module Settings or "
                f"choose one of: {', '.join(sorted(known)) or 'no tiers configured'}",
            )
        )
    return items
