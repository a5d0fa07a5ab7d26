"""Usage figures as the faces show them: one service's, a source's page for the billing
connector, and the totals behind the Prometheus gauges. The worker writes them
(bridge/provisioning/usage.py); nothing here calls the mail server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from bridge.errors import BridgeError
from bridge.mappings import Mappings, resolve
from bridge.models import Service, Usage

#: The events-list filter "over 90% of storage" (docs/design.md#usage).
STORAGE_FULL_PERCENT = 90

#: The per-service figures, in the order the API and the connector list them.
FIGURES = (
    "storage_used_mb",
    "storage_total_mb",
    "mailboxes_used",
    "mailboxes_limit",
    "domains_used",
    "domains_limit",
    "aliases_used",
    "aliases_limit",
)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC (the ledger stores UTC; SQLite hands it back naive)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def storage_percent(usage: Usage) -> int | None:
    """Storage used as a whole percentage of the total, None when either is unknown or 0."""
    if usage.storage_used_mb is None or not usage.storage_total_mb:
        return None
    return usage.storage_used_mb * 100 // usage.storage_total_mb


def as_dict(usage: Usage | None) -> dict[str, Any] | None:
    """A service's usage for the JSON API (None before the first read)."""
    if usage is None:
        return None
    return {
        "username": usage.username,
        **{name: getattr(usage, name) for name in FIGURES},
        "storage_percent": storage_percent(usage),
        "read_at": iso(usage.read_at),
    }


def of_service(session: Session, service_id: int) -> Usage | None:
    """The usage row of one service, if the worker has read it."""
    return session.get(Usage, service_id)


# ----- the billing connector: GET /hooks/<source>/usage ---------------------------------------


class PageQuery(Schema):
    """`?after=<billing service id>&limit=<1..500>`."""

    class Meta:
        unknown = RAISE

    after = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


def page_query(args: dict[str, Any]) -> tuple[str | None, int]:
    """Validate the connector's query string; BridgeError 422 `invalid_request` otherwise."""
    try:
        data = PageQuery().load(args)
    except ValidationError as exc:
        raise BridgeError(
            "invalid_request",
            "the query is not valid: after is a billing service id, limit 1 to 500",
            errors=exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages},
            http_status=422,
        ) from None
    return data.get("after"), data["limit"]


def _tier(mappings: Mappings, service: Service) -> str | None:
    try:
        return resolve(mappings, service.source, service.product_id, service.tier_key).tier
    except BridgeError:
        return service.tier_key


def connector_page(
    session: Session, mappings: Mappings, source: str, after: str | None, limit: int
) -> dict[str, Any]:
    """One page of a source's services with their usage, by billing service id as stored."""
    query = (
        select(Service, Usage)
        .outerjoin(Usage, Usage.service_id == Service.id)
        .where(Service.source == source)
        .order_by(Service.service_ref)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Service.service_ref > after)
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    services = []
    for service, usage in rows:
        services.append(
            {
                "service_id": service.service_ref,
                "username": service.username,
                "tier": _tier(mappings, service),
                "state": service.desired_state.value if service.desired_state else None,
                "storage_used_mb": usage.storage_used_mb if usage else None,
                "storage_limit_mb": usage.storage_total_mb if usage else None,
                "mailboxes_used": usage.mailboxes_used if usage else None,
                "mailboxes_limit": usage.mailboxes_limit if usage else None,
                "domains_used": usage.domains_used if usage else None,
                "aliases_used": usage.aliases_used if usage else None,
                "read_at": iso(usage.read_at) if usage else None,
            }
        )
    return {"services": services, "next": services[-1]["service_id"] if more else None}


# ----- the gauges -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """Sums over every service with a usage row (NULL figures count as nothing)."""

    services: int
    storage_used_mb: int
    storage_total_mb: int
    mailboxes_used: int
    domains_used: int
    aliases_used: int
    storage_full: int
    oldest_read_at: datetime | None


def totals(conn: Connection | Session) -> Totals:
    """Totals of the usage table, read in one query."""
    full = Usage.storage_used_mb * 100 >= Usage.storage_total_mb * STORAGE_FULL_PERCENT
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Usage.storage_used_mb), 0),
            func.coalesce(func.sum(Usage.storage_total_mb), 0),
            func.coalesce(func.sum(Usage.mailboxes_used), 0),
            func.coalesce(func.sum(Usage.domains_used), 0),
            func.coalesce(func.sum(Usage.aliases_used), 0),
            func.count().filter((Usage.storage_total_mb > 0) & full),
            func.min(Usage.read_at),
        )
    ).one()
    counts = [int(v or 0) for v in row[:7]]
    return Totals(
        services=counts[0],
        storage_used_mb=counts[1],
        storage_total_mb=counts[2],
        mailboxes_used=counts[3],
        domains_used=counts[4],
        aliases_used=counts[5],
        storage_full=counts[6],
        oldest_read_at=row[7],
    )
