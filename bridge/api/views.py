"""JSON API views: the console's reads and actions for scripts, with the intake's error shape."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import Schema, ValidationError
from sqlalchemy import select

from bridge.api import bp
from bridge.api.openapi import openapi_document
from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.models import Event, Service, StaffUser
from bridge.support import audit, queries, usage
from bridge.support import schemas as s
from bridge.support.actions import (
    Actor,
    bulk_retry,
    link_service,
    preview_link,
    reconcile,
    resolve_event,
    retry_event,
)
from bridge.support.queries import to_filter
from bridge.support.staff import staff_for_token, touch_due, touch_token
from bridge.support.state import compare, describe_error
from bridge.web import error_response, get_session, runtime, transaction

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _staff() -> StaffUser:
    return cast(StaffUser, g.api_staff)


def _actor() -> Actor:
    return Actor(_staff().email, "api", _staff().id, request.remote_addr)


@bp.before_request
def authenticate() -> ResponseReturnValue | None:
    """Every call but the OpenAPI document needs `Authorization: Bearer <staff token>`."""
    if request.endpoint == "api.openapi":
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    staff = None
    if scheme.lower() == "bearer" and token.strip():
        now = utcnow()
        found = staff_for_token(get_session(), token.strip(), now)
        if found is not None:
            staff, row = found
            if touch_due(row, now):
                with transaction() as db:
                    touch_token(db, row.id, now)
    if staff is None:
        response = error_response(
            "unauthorized",
            "send a staff API token as `Authorization: Bearer <token>` "
            "(`bridge staff token EMAIL` makes one)",
            401,
        )
        body, status = cast(tuple[Any, int], response)
        body.headers["WWW-Authenticate"] = 'Bearer realm="mailbridge"'
        return body, status
    g.api_staff = staff
    return None


def operator_only(view: F) -> F:
    """Only operators may call this."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _staff().can_operate:
            return error_response(
                "forbidden", f"the {_staff().role.value} role may read but not change anything", 403
            )
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _load(schema: Schema, data: Any) -> Any:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise BridgeError(
            "invalid_request",
            "the request is not valid",
            errors=exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages},
            http_status=422,
        ) from None


def _body() -> dict[str, Any]:
    if not request.get_data(cache=True):
        return {}
    if request.mimetype != "application/json":
        raise BridgeError(
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
            http_status=415,
        )
    try:
        data = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        data = None
    if not isinstance(data, dict):
        raise BridgeError("invalid_json", "the body must be a JSON object", http_status=400)
    return data


def _event_or_404(event_id: int) -> Event:
    event = get_session().get(Event, event_id)
    if event is None:
        raise BridgeError("not_found", f"there is no event {event_id}", http_status=404)
    return event


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3 document of this API."""
    return jsonify(openapi_document(current_app))


@bp.get("/me")
def me() -> ResponseReturnValue:
    """Who the token belongs to."""
    return jsonify(s.MeSchema().dump({"email": _staff().email, "role": _staff().role.value}))


@bp.get("/events")
def list_events() -> ResponseReturnValue:
    """Events matching a filter, newest first, one keyset page, with counts per status."""
    query = _load(s.EventQuerySchema(), request.args.to_dict())
    db = get_session()
    page = queries.list_events(
        db, query["filter"], before=query["before"], after=query["after"], limit=query["limit"]
    )
    counts = queries.status_counts(db, query["filter"])
    return jsonify(
        s.EventPageSchema().dump(
            {
                "events": page.events,
                "next_before": page.older,
                "prev_after": page.newer,
                "counts": {k.value: v for k, v in counts.items()},
            }
        )
    )


@bp.get("/events/<int:event_id>")
def get_event(event_id: int) -> ResponseReturnValue:
    """One event with its redacted payload, its service's attempts and the audit trail."""
    event = _event_or_404(event_id)
    data = s.EventDetailSchema().dump(
        {
            **s.event_fields(event),
            "payload": event.payload,
            "attempts": queries.attempts_for(get_session(), event, 50),
            "audit": audit.for_event(get_session(), event.id, event.service_id),
        }
    )
    return jsonify(data)


@bp.post("/events/<int:event_id>/retry")
@operator_only
def retry(event_id: int) -> ResponseReturnValue:
    """Reconcile the event's service again (at once unless `apply` is false)."""
    options = _load(s.RetrySchema(), _body())
    result = retry_event(
        runtime(),
        event_id,
        _actor(),
        apply=options["apply"],
    )
    event = get_session().get(Event, event_id, populate_existing=True)
    return jsonify(
        s.RetryResultSchema().dump(
            {
                "event_id": result.event_id,
                "service_id": result.service_id,
                "requeued": result.requeued,
                "outcome": result.outcome,
                "event": event,
            }
        )
    )


@bp.post("/events/<int:event_id>/resolve")
@operator_only
def resolve(event_id: int) -> ResponseReturnValue:
    """Mark a failed event as handled by a person; its status stays failed."""
    options = _load(s.ResolveSchema(), _body())
    resolve_event(runtime(), event_id, _actor(), options["note"])
    event = get_session().get(Event, event_id, populate_existing=True)
    return jsonify(s.EventSchema().dump(event))


@bp.post("/events/retry")
@operator_only
def retry_many() -> ResponseReturnValue:
    """Queue every service with unresolved failed events matching the filter."""
    data = _load(s.BulkRetrySchema(), _body())
    f = to_filter(data)
    if data["dry_run"]:
        services, events = queries.retry_targets(get_session(), f)
        body = {"services": len(services), "events": events, "queued": False}
    else:
        result = bulk_retry(runtime(), f, _actor())
        body = {"services": result.services, "events": result.events, "queued": True}
    return jsonify(s.BulkRetryResultSchema().dump(body))


_SERVICE_COLUMNS = (
    "id",
    "source",
    "service_ref",
    "username",
    "domain",
    "client_ref",
    "client_email",
    "product_id",
    "tier_key",
    "addons",
    "generation",
    "applied_generation",
    "job_due_at",
    "last_reason",
    "last_message",
)


def _service_body(service: Service) -> dict[str, Any]:
    c = compare(runtime(), service.id)
    db = get_session()
    events = db.scalars(
        select(Event).where(Event.service_id == service.id).order_by(Event.id.desc()).limit(200)
    )
    plan_error = c.plan_error or c.desired_error
    return {
        "service": service.label,
        "links": _links(service),
        **{column: getattr(service, column) for column in _SERVICE_COLUMNS},
        "desired_state": service.desired_state.value if service.desired_state else None,
        "tier": c.resolution.tier if c.resolution else None,
        "bundle": c.resolution.bundle.as_dict() if c.resolution else None,
        "bundle_error": describe_error(c.bundle_error) if c.bundle_error else None,
        "mailserver_error": describe_error(c.read_error) if c.read_error else None,
        "plan_error": describe_error(plan_error) if plan_error is not None else None,
        "in_sync": c.in_sync,
        "rows": c.rows,
        "drift": c.plan.drift if c.plan else [],
        "steps": [step.detail for step in c.plan.steps] if c.plan else [],
        "events": list(reversed(list(events))),
        "audit": audit.for_service(db, service.id),
        "usage": usage.as_dict(usage.of_service(db, service.id)),
    }


def _service_by_ref(source: str, service_ref: str) -> Service:
    service = get_session().scalar(
        select(Service).where(Service.source == source, Service.service_ref == service_ref)
    )
    if service is None:
        raise BridgeError(
            "not_found",
            f"there is no service {service_ref} from {source} in the ledger",
            http_status=404,
        )
    return service


def _service_by_id(service_id: int) -> Service:
    service = get_session().get(Service, service_id)
    if service is None:
        raise BridgeError(
            "not_found",
            f"there is no service with the internal id {service_id}; services are named by "
            f"source and billing id: /api/services/<source>/<billing id>, e.g. "
            f"/api/services/whmcs/{service_id}",
            http_status=404,
        )
    return service


def _links(service: Service) -> dict[str, str]:
    here = url_for("api.get_service", source=service.source, service_ref=service.service_ref)
    return {
        "self": here,
        "reconcile": f"{here}/reconcile",
        "link": f"{here}/link",
        "console": url_for("admin.service", service_id=service.id),
    }


@bp.get("/services/<source:source>/<billing_id:service_ref>")
def get_service(source: str, service_ref: str) -> ResponseReturnValue:
    """A service: desired state, bundle, desired vs actual, drift, its events and audit."""
    service = _service_by_ref(source, service_ref)
    return jsonify(s.ServiceSchema().dump(_service_body(service)))


@bp.get("/services/<int:service_id>")
def get_service_by_id(service_id: int) -> ResponseReturnValue:
    """The same, by the internal id (as in an event's service_id)."""
    return jsonify(s.ServiceSchema().dump(_service_body(_service_by_id(service_id))))


def _reconcile(service: Service) -> ResponseReturnValue:
    _body()
    outcome = reconcile(runtime(), service.id, _actor())
    return jsonify(s.OutcomeSchema().dump(outcome))


@bp.post("/services/<source:source>/<billing_id:service_ref>/reconcile")
@operator_only
def reconcile_service(source: str, service_ref: str) -> ResponseReturnValue:
    """Reconcile one service now."""
    return _reconcile(_service_by_ref(source, service_ref))


@bp.post("/services/<int:service_id>/reconcile")
@operator_only
def reconcile_service_by_id(service_id: int) -> ResponseReturnValue:
    """Reconcile one service now (by internal id)."""
    return _reconcile(_service_by_id(service_id))


def _link(service: Service) -> ResponseReturnValue:
    data = _load(s.LinkSchema(), _body())
    if data["confirm"]:
        preview = link_service(
            runtime(), service.id, data["username"], _actor(), relink=data["relink"]
        )
    else:
        preview = preview_link(runtime(), service.id, data["username"])
    return jsonify(
        s.LinkResultSchema().dump({**dataclasses.asdict(preview), "linked": data["confirm"]})
    )


@bp.post("/services/<source:source>/<billing_id:service_ref>/link")
@operator_only
def link(source: str, service_ref: str) -> ResponseReturnValue:
    """Show (confirm false) or bind (confirm true) the DomainAdmin for a service."""
    return _link(_service_by_ref(source, service_ref))


@bp.post("/services/<int:service_id>/link")
@operator_only
def link_by_id(service_id: int) -> ResponseReturnValue:
    """The same, by internal id."""
    return _link(_service_by_id(service_id))


@bp.get("/mappings")
def mappings() -> ResponseReturnValue:
    """Tiers, products and add-ons as configured, and products events are waiting on."""
    from bridge.mappings import resolve

    m = runtime().settings.mappings
    body = {
        "tiers": {name: b.as_dict() for name, b in m.tiers.items()},
        "products": {
            source: {
                pid: {"tier": tier, "bundle": resolve(m, source, pid).bundle.as_dict()}
                for pid, tier in table.items()
            }
            for source, table in m.products.items()
        },
        "addons": {src: {n: b.as_dict() for n, b in t.items()} for src, t in m.addons.items()},
        "unmapped": [
            {
                "source": u.source,
                "product_id": u.product_id,
                "events": u.events,
                "services": u.services,
                "mapped_now": str(u.product_id) in m.products.get(u.source, {}),
            }
            for u in queries.unmapped_products(get_session())
        ],
    }
    return jsonify(s.MappingsSchema().dump(body))
