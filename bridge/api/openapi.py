"""The OpenAPI 3 document of /api/, built with apispec from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from bridge.models import MAX_ROW_ID
from bridge.support import schemas as s

VERSION = "1.0.0"

_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "422": {"$ref": "#/components/responses/Invalid"},
}
_OPERATOR = {"403": {"$ref": "#/components/responses/Forbidden"}}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
#: What a request body can be refused with before its fields are read.
_BODY = {
    "400": {"$ref": "#/components/responses/BadJson"},
    "413": {"$ref": "#/components/responses/TooLarge"},
    "415": {"$ref": "#/components/responses/NotJson"},
}


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: Any) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _id(name: str, what: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID},
        "example": 1,
        "description": f"{what}; an id that does not exist is 404",
    }


def _text(name: str, what: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "schema": {"type": "string"},
        "description": what,
    }


def build_spec() -> APISpec:
    """Describe every route of the staff API."""
    spec = APISpec(
        title="mailbridge staff API",
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Find, understand and retry failed billing hooks. Authenticate with "
            "`Authorization: Bearer <token>` (`bridge staff token EMAIL`). Viewers read; "
            "operators also retry, resolve and reconcile. Errors share the webhook intake's "
            "shape: {error, message, errors?}."
        },
        servers=[{"url": "/"}],
    )
    spec.components.security_scheme(
        "staffToken", {"type": "http", "scheme": "bearer", "description": "staff API token"}
    )
    spec.components.schema("Error", schema=s.ErrorSchema)
    for name, schema in (
        ("Event", s.EventSchema),
        ("EventDetail", s.EventDetailSchema),
        ("EventPage", s.EventPageSchema),
        ("Outcome", s.OutcomeSchema),
        ("RetryResult", s.RetryResultSchema),
        ("BulkRetryResult", s.BulkRetryResultSchema),
        ("Usage", s.UsageSchema),
        ("Service", s.ServiceSchema),
        ("Mappings", s.MappingsSchema),
        ("Me", s.MeSchema),
        ("RetryRequest", s.RetrySchema),
        ("ResolveRequest", s.ResolveSchema),
        ("BulkRetryRequest", s.BulkRetrySchema),
        ("LinkRequest", s.LinkSchema),
        ("LinkResult", s.LinkResultSchema),
    ):
        spec.components.schema(name, schema=schema)
    error = {"$ref": "#/components/schemas/Error"}
    for name, text in (
        ("Unauthorized", "no token, or a revoked or unknown one"),
        ("Forbidden", "the token's staff member is a viewer"),
        ("NotFound", "no such event or service"),
        ("Invalid", "the input is not valid; `errors` lists it by field"),
        ("Conflict", "the action does not apply (e.g. resolving an event that is not failed)"),
        ("BadJson", "the body is not a JSON object (`invalid_json`)"),
        ("TooLarge", "the body is larger than `intake.max_body_bytes`"),
        ("NotJson", "the body is not sent as `Content-Type: application/json`"),
    ):
        spec.components.response(name, _json(error, text))

    spec.path(
        path="/api/me",
        operations={
            "get": {
                "summary": "Who the token belongs to",
                "responses": {"200": _json("Me", "the staff member"), **_ERRORS},
            }
        },
    )
    spec.path(
        path="/api/events",
        operations={
            "get": {
                "summary": "List events, newest first (keyset pages)",
                "parameters": [{"in": "query", "schema": s.EventQuerySchema}],
                "responses": {"200": _json("EventPage", "one page"), **_ERRORS},
            }
        },
    )
    spec.path(
        path="/api/events/retry",
        operations={
            "post": {
                "summary": "Retry every unresolved failed event matching a filter",
                "description": "Queues each service once; the worker applies them at the mail "
                "server's rate limit. `dry_run` only counts.",
                "requestBody": _body("BulkRetryRequest"),
                "responses": {
                    "200": _json("BulkRetryResult", "services queued"),
                    **_BODY,
                    **_ERRORS,
                    **_OPERATOR,
                },
            }
        },
    )
    spec.path(
        path="/api/events/{event_id}",
        operations={
            "get": {
                "summary": "One event with payload, attempts and audit",
                "parameters": [_id("event_id", "event id")],
                "responses": {
                    "200": _json("EventDetail", "the event"),
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            }
        },
    )
    spec.path(
        path="/api/events/{event_id}/retry",
        operations={
            "post": {
                "summary": "Retry one event: reconcile its service again",
                "parameters": [_id("event_id", "event id")],
                "requestBody": _body("RetryRequest"),
                "responses": {
                    "200": _json("RetryResult", "queued, and the outcome when applied"),
                    **_BODY,
                    "409": {"$ref": "#/components/responses/Conflict"},
                    **_ERRORS,
                    **_OPERATOR,
                    **_NOT_FOUND,
                },
            }
        },
    )
    spec.path(
        path="/api/events/{event_id}/resolve",
        operations={
            "post": {
                "summary": "Mark a failed event resolved (it stays failed)",
                "parameters": [_id("event_id", "event id")],
                "requestBody": _body("ResolveRequest"),
                "responses": {
                    "200": _json("Event", "the event"),
                    **_BODY,
                    "409": {"$ref": "#/components/responses/Conflict"},
                    **_ERRORS,
                    **_OPERATOR,
                    **_NOT_FOUND,
                },
            }
        },
    )
    # Services are named by source and billing id; the internal id (an event's service_id)
    # is accepted too, for links.
    by_ref = [
        _text("source", "billing source name, e.g. whmcs"),
        _text("service_ref", "billing id"),
    ]
    by_id = [_id("service_id", "the bridge's internal id (prefer source and billing id)")]
    for base, params, also in (
        ("/api/services/{source}/{service_ref}", by_ref, ""),
        ("/api/services/{service_id}", by_id, " (by internal id)"),
    ):
        spec.path(
            path=base,
            operations={
                "get": {
                    "summary": "A service: desired vs actual, drift, events, audit" + also,
                    "description": "Reads the DomainAdmin from the mail server; when it cannot, "
                    "`mailserver_error` says why and the rest is still returned.",
                    "parameters": params,
                    "responses": {"200": _json("Service", "the service"), **_ERRORS, **_NOT_FOUND},
                }
            },
        )
        spec.path(
            path=f"{base}/reconcile",
            operations={
                "post": {
                    "summary": "Reconcile a service now" + also,
                    "parameters": params,
                    "requestBody": _body(
                        {"type": "object", "description": "no fields; may be empty"}
                    ),
                    "responses": {
                        "200": _json("Outcome", "how it ended"),
                        **_BODY,
                        **_ERRORS,
                        **_OPERATOR,
                        **_NOT_FOUND,
                    },
                }
            },
        )
        spec.path(
            path=f"{base}/link",
            operations={
                "post": {
                    "summary": "Bind a service to an existing DomainAdmin (or show it first)"
                    + also,
                    "description": "With `confirm: false` (the default) the account's recovery "
                    "e-mail and domains are read and returned, nothing changes. With `confirm: "
                    "true` the binding is recorded (audited); `relink: true` moves an existing "
                    "one.",
                    "parameters": params,
                    "requestBody": _body("LinkRequest"),
                    "responses": {
                        "200": _json("LinkResult", "the account"),
                        **_BODY,
                        "409": {"$ref": "#/components/responses/Conflict"},
                        **_ERRORS,
                        **_OPERATOR,
                        **_NOT_FOUND,
                    },
                }
            },
        )
    spec.path(
        path="/api/mappings",
        operations={
            "get": {
                "summary": "Tiers, products, add-ons, and products events wait on",
                "responses": {"200": _json("Mappings", "the mappings"), **_ERRORS},
            }
        },
    )
    spec.path(
        path="/api/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document"}},
            }
        },
    )
    return spec


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document as a dict, built once per app."""
    cached = app.extensions.get("bridge.openapi")
    if cached is None:
        cached = build_spec().to_dict()
        cached["security"] = [{"staffToken": []}]
        app.extensions["bridge.openapi"] = cached
    return cached
