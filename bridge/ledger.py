"""The ledger: store each event and fold it into its service's desired state, in one transaction.

Events are edges, the bridge is level-triggered (docs/design.md#desired-state). Each action touches
some aspects of the desired state; an aspect only moves forward in billing time, so a late
event cannot undo a newer one. An event whose every aspect is already newer is `superseded`.

`record_event()` is the intake's write path: three SQLAlchemy Core statements, compiled once
per dialect (building a statement costs more than running it): the service upserted and read
back (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, which also locks its row on PostgreSQL),
the event inserted unless its delivery id is already stored (`ON CONFLICT DO NOTHING
RETURNING id`, the duplicate check and the insert in one statement), and one UPDATE of the
service columns that changed. The fold itself (`_fold()`) is plain Python on the row's values.

The three run on the transaction's DBAPI cursor (`_Prepared`), with SQLAlchemy's own type
processing of their values and of the returned row: SQLAlchemy's per-execution work (cache
look-up, execution context, result set-up, events) costs more CPU than SQLite takes to run
them. Errors are raised as `Connection.execute()` raises them (`sqlalchemy.exc.DBAPIError`
subclasses, parameters hidden, a lost connection invalidated); engine events such as
`before_cursor_execute` do not see these statements.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Column, Connection, Insert, Table, Update, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import (
    Action,
    BillingEvent,
    EventStatus,
    Ignored,
    ServiceState,
    aspects_of,
)
from bridge.mappings import MappingError, Mappings, refuse_ambiguous_zero, resolve
from bridge.models import Event, Service

log = logging.getLogger(__name__)

LIFECYCLE: dict[Action, ServiceState] = {
    Action.CREATE: ServiceState.ACTIVE,
    Action.UNSUSPEND: ServiceState.ACTIVE,
    Action.SUSPEND: ServiceState.SUSPENDED,
    Action.TERMINATE: ServiceState.TERMINATED,
}


class IdempotencyConflictError(BridgeError):
    """A webhook id seen before arrived with a different body."""

    http_status = 422


class AlreadyStoredError(Exception):
    """`record_event()` found this delivery id stored already: the caller rolls back (the
    service row may have been upserted) and answers from the stored event (`find_event()`)."""


@dataclass(frozen=True)
class Recorded:
    """A newly stored event: what its answer and its log line need."""

    id: int
    source: str
    service_ref: str | None
    action: str | None
    status: EventStatus
    reason: str | None
    message: str | None
    service_id: int | None
    #: Its service's next reconcile (set while the event is queued).
    job_due_at: datetime | None

    def log_fields(self) -> dict[str, object]:
        """The same fields as `Event.log_fields()`."""
        return {
            "event_id": self.id,
            "source": self.source,
            "service": self.service_ref,
            "action": self.action,
            "status": self.status.value,
            "reason": self.reason,
        }


def find_event(session: Session, source: str, webhook_id: str, body_sha256: str) -> Event | None:
    """The event stored for this delivery id, or None; a different body is a conflict."""
    existing = session.scalar(
        select(Event).where(Event.source == source, Event.webhook_id == webhook_id)
    )
    if existing is not None and existing.body_sha256 != body_sha256:
        raise IdempotencyConflictError(
            "idempotency_conflict",
            f"webhook-id {webhook_id} was already used for a different body (event "
            f"{existing.id}); send a new id for a new event",
        )
    return existing


def lock_service(session: Session, source: str, service_ref: str) -> Service:
    """Get or create the service row, locked for this transaction."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(Service)
        .values(
            source=source,
            service_ref=service_ref,
            addons={},
            aspect_times={},
            generation=0,
            applied_generation=0,
            attempt_count=0,
            password_pending=False,
        )
        .on_conflict_do_nothing(index_elements=["source", "service_ref"])
    )
    query = select(Service).where(Service.source == source, Service.service_ref == service_ref)
    if dialect == "postgresql":
        query = query.with_for_update()
    service = session.scalars(query.execution_options(populate_existing=True)).one()
    return service


def _apply_aspect(
    service: dict[str, Any], aspect: str, event: BillingEvent, password_hash: str | None
) -> None:
    if aspect == "lifecycle":
        # Only an unsuspend or a create cancels a pending deletion; a suspend keeps it (the
        # account stays disabled and is deleted when the grace period ends), and a repeated
        # terminate keeps the first deletion date.
        pending = service["terminate_requested_at"]
        if event.action in (Action.SUSPEND, Action.TERMINATE) and pending is not None:
            service["desired_state"] = ServiceState.TERMINATED
            return
        state = LIFECYCLE[event.action]
        service["desired_state"] = state
        service["terminate_requested_at"] = (
            event.occurred_at if state is ServiceState.TERMINATED else None
        )
    elif aspect == "package":
        service["product_id"] = event.product_id
        service["tier_key"] = event.tier_key
        service["addons"] = dict(event.addons)
    elif aspect == "password":
        if password_hash is not None:
            service["password_hash"] = password_hash
            service["password_pending"] = True
    elif aspect == "owner":
        service["client_ref"] = event.client_ref
        service["client_email"] = event.client_email
        service["client_name"] = event.client_name
    elif aspect == "ownership":
        service["transfer_to"] = event.target_service_ref


def _stamp(times: dict[str, str], aspect: str, at: datetime) -> bool:
    seen = times.get(aspect)
    if seen is not None and datetime.fromisoformat(seen) > at:
        return False
    times[aspect] = at.isoformat()
    return True


class _Statements(NamedTuple):
    upsert_service: Insert
    insert_event: Insert
    update_service: Update


_SERVICES = cast(Table, Service.__table__)
_EVENTS = cast(Table, Event.__table__)
#: What a new service row starts with (the rest is NULL; created_at and updated_at are set
#: at execution).
_NEW_SERVICE = {
    "create_requested": False,
    "addons": {},
    "aspect_times": {},
    "generation": 0,
    "applied_generation": 0,
    "attempt_count": 0,
    "password_pending": False,
}


#: The service columns the fold reads or writes (RETURNING fewer columns costs less).
_FOLDED = (
    "id",
    "bound_at",
    "username",
    "domain",
    "create_requested",
    "aspect_times",
    "desired_state",
    "terminate_requested_at",
    "product_id",
    "tier_key",
    "addons",
    "password_hash",
    "password_pending",
    "client_ref",
    "client_email",
    "client_name",
    "transfer_to",
    "generation",
    "job_due_at",
    "last_reason",
    "last_message",
)


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The write path's statements for one dialect; the values come at execution."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(_SERVICES)
    # A no-op DO UPDATE, not DO NOTHING, so that RETURNING gives the row that was already
    # there too; on PostgreSQL the update locks it until the commit, as FOR UPDATE would.
    upsert_service = upsert.on_conflict_do_update(
        index_elements=["source", "service_ref"], set_={"source": upsert.excluded.source}
    ).returning(*(_SERVICES.c[name] for name in _FOLDED))
    insert_event = (
        insert(_EVENTS)
        .on_conflict_do_nothing(index_elements=["source", "webhook_id"])
        .returning(_EVENTS.c.id)
    )
    # SET lists the columns given at execution (updated_at among them).
    update_service = update(_SERVICES).where(_SERVICES.c.id == bindparam("service_key"))
    return _Statements(upsert_service, insert_event, update_service)


_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Prepared:
    """One statement compiled for one dialect and one set of values, run on the DBAPI cursor.

    Values and returned columns go through the processors SQLAlchemy itself would apply
    (`TypeEngine.bind_processor()` / `result_processor()` of the dialect's implementation),
    so the driver receives and the caller gets what `Connection.execute()` would give.
    Every value is given at execution: the statement has no column default left to fill.
    """

    sql: str
    names: tuple[str, ...]
    binds: tuple[_Processor, ...]
    results: tuple[_Processor, ...]
    positional: bool

    @classmethod
    def compile(
        cls,
        statement: Insert | Update,
        dialect: Dialect,
        keys: Collection[str],
        returning: tuple[Column[Any], ...] = (),
    ) -> _Prepared:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        names = tuple(compiled.positiontup or ()) if dialect.positional else tuple(compiled.binds)
        if set(names) != set(keys):
            raise RuntimeError(f"statement binds {sorted(names)}, values given for {sorted(keys)}")
        return cls(
            sql=compiled.string,
            names=names,
            binds=tuple(
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ),
            results=tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in returning
            ),
            positional=dialect.positional,
        )

    def run(self, conn: Connection, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """Execute with these values; the first returned row (None when there is none, or
        when the statement returns nothing)."""
        args = [
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.binds, strict=True)
        ]
        params: tuple[Any, ...] | dict[str, Any] = (
            tuple(args) if self.positional else dict(zip(self.names, args, strict=True))
        )
        dbapi_error = conn.dialect.loaded_dbapi.Error
        cursor = None
        try:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self.sql, params)
                row = cursor.fetchone() if self.results else None
            finally:
                cursor.close()
        except dbapi_error as exc:
            # What Connection.execute() raises for a driver error (Connection
            # ._handle_dbapi_exception): the error wrapped, a lost connection invalidated.
            lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                self.sql,
                params,
                exc,
                dbapi_error,
                hide_parameters=conn.engine.hide_parameters,
                connection_invalidated=lost,
                dialect=conn.dialect,
            ) from exc
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for process, value in zip(self.results, row, strict=True)
        )


_FOLDED_COLUMNS = tuple(_SERVICES.c[name] for name in _FOLDED)


@functools.cache
def _upsert_service(dialect: Dialect) -> _Prepared:
    keys = ("source", "service_ref", *_NEW_SERVICE, "created_at", "updated_at")
    upsert = _statements(dialect.name).upsert_service
    return _Prepared.compile(upsert, dialect, keys, _FOLDED_COLUMNS)


@functools.cache
def _insert_event(dialect: Dialect, keys: tuple[str, ...]) -> _Prepared:
    insert = _statements(dialect.name).insert_event
    return _Prepared.compile(insert, dialect, keys, (_EVENTS.c.id,))


@functools.cache
def _update_service(dialect: Dialect, keys: tuple[str, ...]) -> _Prepared:
    return _Prepared.compile(_statements(dialect.name).update_service, dialect, keys)


def record_event(
    session: Session | Connection,
    *,
    source: str,
    webhook_id: str,
    body_sha256: str,
    parsed: BillingEvent | Ignored,
    password_hash: str | None,
    mappings: Mappings,
    now: datetime,
    zero_quota: Callable[[], str | None] | None = None,
) -> Recorded:
    """Store one new event and update its service's desired state; the caller commits.

    `zero_quota` tells what `bridge check-server` saw a quota of 0 do (None before it ran),
    asked only for a bundle that holds a 0: such a bundle fails at once unless it is "zero"
    (mappings.refuse_ambiguous_zero).

    Raises AlreadyStoredError when this (source, webhook_id) is stored already; the caller
    must then roll back.
    """
    conn = session.connection() if isinstance(session, Session) else session
    dialect = conn.dialect
    event: dict[str, Any] = {
        "source": source,
        "webhook_id": webhook_id,
        "body_sha256": body_sha256,
        "native_event": parsed.native_event,
        "service_ref": parsed.service_ref,
        "received_at": now,
        "payload": parsed.payload,
        "reason": None,
        "message": None,
        "generation": None,
        "finished_at": None,
    }
    if isinstance(parsed, Ignored):
        event |= {
            "action": None,
            "service_id": None,
            "occurred_at": now,
            "status": EventStatus.IGNORED,
            "reason": "not_provisioning",
            "message": parsed.message,
            "finished_at": now,
        }
        return _store_event(conn, event, None)

    new_service = {"source": source, "service_ref": parsed.service_ref, **_NEW_SERVICE}
    row = _upsert_service(dialect).run(
        conn, new_service | {"created_at": utcnow(), "updated_at": utcnow()}
    )
    assert row is not None  # the upsert returns the row, new or not
    before = dict(zip(_FOLDED, row, strict=True))
    service = dict(before)
    event |= {
        "action": parsed.action.value,
        "service_id": service["id"],
        "occurred_at": parsed.occurred_at,
        "status": EventStatus.RECEIVED,
    }
    _fold(service, event, parsed, password_hash, mappings, now, zero_quota)
    recorded = _store_event(conn, event, service)
    changed = {k: v for k, v in service.items() if v != before[k]}
    if changed:
        changed |= {"updated_at": utcnow(), "service_key": service["id"]}
        _update_service(dialect, tuple(changed)).run(conn, changed)
    return recorded


def _store_event(
    conn: Connection, event: dict[str, Any], service: dict[str, Any] | None
) -> Recorded:
    row = _insert_event(conn.dialect, tuple(event)).run(conn, event)
    if row is None:
        raise AlreadyStoredError(event["webhook_id"])
    event_id = row[0]
    return Recorded(
        id=event_id,
        source=event["source"],
        service_ref=event["service_ref"],
        action=event["action"],
        status=event["status"],
        reason=event["reason"],
        message=event["message"],
        service_id=event["service_id"],
        job_due_at=service["job_due_at"] if service is not None else None,
    )


def _fold(
    service: dict[str, Any],
    event: dict[str, Any],
    parsed: BillingEvent,
    password_hash: str | None,
    mappings: Mappings,
    now: datetime,
    zero_quota: Callable[[], str | None] | None,
) -> None:
    """Fold one event into its service's values; both dicts are updated in place."""
    bound = service["bound_at"] is not None
    if bound and parsed.username and parsed.username.lower() != (service["username"] or "").lower():
        # Never re-target a bound service: a typo must not steer writes to another account.
        event |= {
            "status": EventStatus.FAILED,
            "finished_at": now,
            "reason": "username_changed",
            "message": (
                f'the event names DomainAdmin "{parsed.username}", but this service is bound '
                f'to "{service["username"]}"; nothing was changed. If the account really '
                f"changed, relink the service (service page, or `bridge services relink "
                f"{event['source']} {parsed.service_ref} {parsed.username}`), then retry"
            ),
        }
        return
    if not bound and parsed.username and service["username"] is None:
        service["username"] = parsed.username
    if service["domain"] is None and parsed.domain:
        service["domain"] = parsed.domain
    if parsed.action is Action.CREATE:
        service["create_requested"] = True

    aspects = aspects_of(parsed.action, parsed.transfer_kind)
    if not aspects:
        event |= {
            "status": EventStatus.APPLIED,
            "finished_at": now,
            "message": "recorded; a renewal changes nothing on the mail server",
        }
        return

    times = dict(service["aspect_times"] or {})
    moved = [a for a in aspects if _stamp(times, a, parsed.occurred_at)]
    if not moved:
        event |= {
            "status": EventStatus.SUPERSEDED,
            "finished_at": now,
            "reason": "superseded",
            "message": "a newer event for this service was already absorbed; nothing changes",
        }
        return
    service["aspect_times"] = times
    if parsed.action is Action.CREATE and not bound and parsed.username:
        # Until bound, the newest create names the account to create or adopt.
        service["username"] = parsed.username
    for aspect in moved:
        _apply_aspect(service, aspect, parsed, password_hash)
    service["generation"] += 1
    event["generation"] = service["generation"]

    if "package" in moved:
        try:
            resolution = resolve(
                mappings,
                event["source"],
                service["product_id"],
                service["tier_key"],
                service["addons"],
            )
            if 0 in resolution.bundle.as_dict().values():
                refuse_ambiguous_zero(resolution, zero_quota() if zero_quota else None)
        except MappingError as exc:
            event |= {
                "status": EventStatus.FAILED,
                "finished_at": now,
                "reason": exc.reason,
                "message": exc.message,
            }
            service["last_reason"], service["last_message"] = exc.reason, exc.message
            service["job_due_at"] = None
            return
    event["status"] = EventStatus.QUEUED
    if service["job_due_at"] is None or service["job_due_at"] > now:
        service["job_due_at"] = now
