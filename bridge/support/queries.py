"""Reading the ledger for staff: event filters, keyset pages, counts, the 48-hour chart.

Every query here is plain SQL that SQLite and PostgreSQL both run. Pages are keyset
(`id < before`, newest first), never OFFSET, so page 2000 of 100k events costs what page 1 does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import ColumnElement, Integer, Select, cast, func, select
from sqlalchemy.orm import Session

from bridge.lifecycle import Action, EventStatus
from bridge.models import Attempt, Event, Service

DEFAULT_PAGE = 50
MAX_PAGE = 200
CHART_HOURS = 48
#: Bottom to top in the chart, and the order of the counts.
STATUS_ORDER = tuple(EventStatus)


@dataclass(frozen=True)
class EventFilter:
    """What staff narrow the event list by; None means any."""

    status: EventStatus | None = None
    source: str | None = None
    action: str | None = None
    service: str | None = None  # the billing system's service id
    service_id: int | None = None  # the bridge's own service row id
    reason: str | None = None
    product: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    unresolved: bool = False

    def params(self) -> dict[str, str]:
        """The filter as query-string parameters (only those set)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value is False:
                continue
            if isinstance(value, datetime):
                out[f.name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            elif value is True:
                out[f.name] = "1"
            else:
                out[f.name] = str(value)
        return out

    def is_empty(self) -> bool:
        """True when nothing narrows the list."""
        return not self.params()

    def with_status(self, status: EventStatus | None) -> EventFilter:
        """The same filter with another status."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["status"] = status
        return EventFilter(**values)


# ---- the filter as staff give it (console query string, API, CLI) -------------------------

_FILTER_FIELDS = (
    "status",
    "source",
    "action",
    "service",
    "service_id",
    "reason",
    "product",
    "since",
    "until",
    "unresolved",
)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _text(description: str) -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=64), metadata={"description": description}
    )


class EventFilterSchema(_Strict):
    """Which events: every field narrows the set; all are optional."""

    status = fields.Enum(EventStatus, by_value=True, metadata={"description": "event status"})
    source = _text("billing source name, as under sources: in the config")
    action = fields.String(
        validate=validate.OneOf([a.value for a in Action]),
        metadata={"description": "normalized lifecycle action"},
    )
    service = _text("the billing system's service id")
    service_id = fields.Integer(
        strict=False,
        validate=validate.Range(min=1),
        metadata={"description": "the bridge's own service id"},
    )
    reason = _text("failure or outcome reason, e.g. unmapped_product")
    product = _text("the service's billing product id")
    since = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "received at or after (ISO 8601; no zone means UTC)"},
    )
    until = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "received before (ISO 8601; no zone means UTC)"},
    )
    unresolved = fields.Boolean(metadata={"description": "only events nobody marked resolved"})

    @validates_schema
    def range_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        """until must come after since."""
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("must be later than since", "until")


def to_filter(data: dict[str, Any]) -> EventFilter:
    """The EventFilter of loaded filter fields."""
    return EventFilter(**{k: v for k, v in data.items() if k in _FILTER_FIELDS})


def conditions(f: EventFilter, *, status: bool = True) -> list[ColumnElement[bool]]:
    """SQL conditions for a filter (without the status one when `status` is False)."""
    out: list[ColumnElement[bool]] = []
    if status and f.status is not None:
        out.append(Event.status == f.status)
    if f.source:
        out.append(Event.source == f.source)
    if f.action:
        out.append(Event.action == f.action)
    if f.service_id is not None:
        out.append(Event.service_id == f.service_id)
    if f.service or f.product:
        # Through the services table: events.service_id is indexed, service_ref is not.
        services = select(Service.id)
        if f.service:
            services = services.where(Service.service_ref == f.service)
        if f.source:
            services = services.where(Service.source == f.source)
        if f.product:
            services = services.where(Service.product_id == f.product)
        out.append(Event.service_id.in_(services))
    if f.reason:
        out.append(Event.reason == f.reason)
    if f.since is not None:
        out.append(Event.received_at >= f.since)
    if f.until is not None:
        out.append(Event.received_at < f.until)
    if f.unresolved:
        out.append(Event.resolved_at.is_(None))
    return out


@dataclass(frozen=True)
class EventPage:
    """One page, newest first, with the cursors to its neighbours."""

    events: list[Event]
    older: int | None  # pass as ?before=
    newer: int | None  # pass as ?after=


def _exists(session: Session, query: Select[Any]) -> bool:
    return session.scalar(query.limit(1)) is not None


def list_events(
    session: Session,
    f: EventFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> EventPage:
    """A page of events matching `f`: below `before`, or just above `after`, newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    where = conditions(f)
    query = select(Event).where(*where)
    if after is not None:
        rows = list(
            session.scalars(query.where(Event.id > after).order_by(Event.id.asc()).limit(limit + 1))
        )
        more_newer = len(rows) > limit
        events = list(reversed(rows[:limit]))
        newer = events[0].id if more_newer and events else None
        older = (
            events[-1].id
            if events and _exists(session, select(Event.id).where(*where, Event.id < events[-1].id))
            else None
        )
        return EventPage(events, older, newer)
    if before is not None:
        query = query.where(Event.id < before)
    rows = list(session.scalars(query.order_by(Event.id.desc()).limit(limit + 1)))
    events = rows[:limit]
    older = events[-1].id if len(rows) > limit else None
    newer = (
        events[0].id
        if events
        and before is not None
        and _exists(session, select(Event.id).where(*where, Event.id > events[0].id))
        else None
    )
    return EventPage(events, older, newer)


def status_counts(session: Session, f: EventFilter) -> dict[EventStatus, int]:
    """How many events match `f` in each status (the status part of `f` is ignored)."""
    # count(*), not count(id): PostgreSQL can then answer from the (source, status,
    # resolved_at) or (status, resolved_at) index alone (migration 0010).
    rows = session.execute(
        select(Event.status, func.count())
        .where(*conditions(f, status=False))
        .group_by(Event.status)
    )
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for status, n in rows:
        counts[EventStatus(status)] = int(n)
    return counts


def unresolved_failed(session: Session, f: EventFilter) -> int:
    """Failed events matching `f` that nobody marked resolved."""
    g = f.with_status(EventStatus.FAILED)
    return int(
        session.scalar(select(func.count()).where(*conditions(g), Event.resolved_at.is_(None))) or 0
    )


def retry_targets(session: Session, f: EventFilter) -> tuple[list[int], int]:
    """For a bulk retry: the services with unresolved failed events matching `f`, and how
    many such events there are. Whatever status `f` names, only failed events count."""
    where = [
        *conditions(f.with_status(EventStatus.FAILED)),
        Event.resolved_at.is_(None),
        Event.service_id.is_not(None),
    ]
    services = [
        sid
        for sid in session.scalars(
            select(Event.service_id).where(*where).group_by(Event.service_id)
        )
        if sid is not None
    ]
    events = int(session.scalar(select(func.count(Event.id)).where(*where)) or 0)
    return sorted(services), events


# ---- the chart ----------------------------------------------------------------------------


def _epoch_hour(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 3600), Integer)
    # SQLite keeps UTC as "YYYY-MM-DD HH:MM:SS.ffffff"; %s is seconds since the epoch.
    return cast(func.strftime("%s", column), Integer) / 3600


@dataclass
class Hour:
    """One hour of the chart."""

    start: datetime
    counts: dict[EventStatus, int] = field(default_factory=dict)
    errors: int = 0  # reconcile attempts that ended in retry or failed

    @property
    def total(self) -> int:
        """Events received in this hour."""
        return sum(self.counts.values())


def hourly(session: Session, now: datetime, hours: int = CHART_HOURS) -> list[Hour]:
    """Events received per hour by their status now, and failed reconciles per hour,
    for the last `hours` hours (oldest first; the last one is the current hour)."""
    current = int(now.timestamp()) // 3600
    first = current - hours + 1
    since = datetime.fromtimestamp(first * 3600, UTC)
    slots = [
        Hour(datetime.fromtimestamp((first + i) * 3600, UTC), dict.fromkeys(STATUS_ORDER, 0))
        for i in range(hours)
    ]
    bucket = _epoch_hour(session, Event.received_at).label("hour")
    rows = session.execute(
        select(bucket, Event.status, func.count(Event.id))
        .where(Event.received_at >= since)
        .group_by(bucket, Event.status)
    )
    for hour, status, n in rows:
        index = int(hour) - first
        if 0 <= index < hours:
            slots[index].counts[EventStatus(status)] += int(n)
    bucket = _epoch_hour(session, Attempt.started_at).label("hour")
    rows = session.execute(
        select(bucket, func.count(Attempt.id))
        .where(Attempt.started_at >= since, Attempt.outcome.in_(["retry", "failed"]))
        .group_by(bucket)
    )
    for hour, n in rows:
        index = int(hour) - first
        if 0 <= index < hours:
            slots[index].errors += int(n)
    return slots


# ---- mappings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmappedProduct:
    """A billing product that events are waiting on."""

    source: str
    product_id: str | None
    events: int
    services: int
    latest: datetime | None


def unmapped_products(session: Session) -> list[UnmappedProduct]:
    """Products of unresolved events that failed with `unmapped_product`, most events first."""
    rows = session.execute(
        select(
            Service.source,
            Service.product_id,
            func.count(Event.id),
            func.count(func.distinct(Service.id)),
            func.max(Event.received_at),
        )
        .join(Event, Event.service_id == Service.id)
        .where(
            Event.status == EventStatus.FAILED,
            Event.reason == "unmapped_product",
            Event.resolved_at.is_(None),
        )
        .group_by(Service.source, Service.product_id)
        .order_by(func.count(Event.id).desc(), Service.source, Service.product_id)
    )
    return [
        UnmappedProduct(source, product, int(events), int(services), latest)
        for source, product, events, services, latest in rows
    ]


def attempts_for(session: Session, event: Event, limit: int = 50) -> list[Attempt]:
    """The reconcile attempts that worked on this event (newest first)."""
    if event.service_id is None:
        return []
    query = select(Attempt).where(Attempt.service_id == event.service_id)
    if event.generation is not None:
        query = query.where(Attempt.generation >= event.generation)
    else:
        query = query.where(Attempt.started_at >= event.received_at)
    return list(session.scalars(query.order_by(Attempt.id.desc()).limit(limit)))
