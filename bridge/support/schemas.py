"""marshmallow schemas of the staff JSON shapes (API, CLI --json): input RAISE, output dumped."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from bridge.adapters.base import USERNAME, USERNAME_RULE
from bridge.lifecycle import EventStatus
from bridge.models import MAX_ROW_ID
from bridge.support.queries import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EventFilterSchema,
    printable,
    to_filter,
)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class _Flag(fields.Boolean):
    """A JSON body's boolean: true or false only (1/0 and "yes" are for query strings)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _flag(default: bool, description: str) -> _Flag:
    return _Flag(load_default=default, metadata={"description": description})


class EventQuerySchema(EventFilterSchema):
    """GET /api/events: a filter plus a keyset cursor."""

    before = fields.Integer(
        strict=False,
        validate=validate.Range(min=1, max=MAX_ROW_ID),
        metadata={"description": "events with a smaller id (the next, older page)"},
    )
    after = fields.Integer(
        strict=False,
        validate=validate.Range(min=0, max=MAX_ROW_ID),
        metadata={
            "description": "events with a larger id (the previous, newer page); not with before"
        },
    )
    limit = fields.Integer(
        strict=False,
        load_default=DEFAULT_PAGE,
        validate=validate.Range(min=1, max=MAX_PAGE),
        metadata={"description": f"page size, at most {MAX_PAGE}"},
    )

    @validates_schema
    def one_cursor(self, data: dict[str, Any], **kwargs: Any) -> None:
        """One direction per page."""
        if data.get("before") is not None and data.get("after") is not None:
            raise ValidationError("give before or after, not both", "after")

    @post_load
    def split(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The filter, the cursor and the page size."""
        return {
            "filter": to_filter(data),
            "before": data.get("before"),
            "after": data.get("after"),
            "limit": data["limit"],
        }


class BulkRetrySchema(EventFilterSchema):
    """POST /api/events/retry: which failed events; `dry_run` only counts."""

    unresolved = _flag(False, "only events nobody marked resolved")
    dry_run = _flag(False, "count the services, queue nothing")


class RetrySchema(_Strict):
    """POST /api/events/{id}/retry."""

    apply = _flag(True, "reconcile at once (default); false only queues it")


def _username(value: str) -> bool:
    if not USERNAME.fullmatch(value):
        raise ValidationError(USERNAME_RULE)
    return True


def _note_text(value: str) -> bool:
    """Free text over several lines: newlines and tabs, no other control character."""
    return printable(value.replace("\n", " ").replace("\r", " ").replace("\t", " "))


class ResolveSchema(_Strict):
    """POST /api/events/{id}/resolve."""

    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=[validate.Length(max=500), _note_text],
        metadata={"description": "why it needs no retry"},
    )


# ---- output -------------------------------------------------------------------------------


class ErrorSchema(Schema):
    """The error shape shared with the webhook intake."""

    error = fields.String(required=True, metadata={"description": "snake_case reason"})
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "per field, for invalid input"})


class EventSchema(Schema):
    """One event, without its payload."""

    id = fields.Integer()
    source = fields.String()
    webhook_id = fields.String()
    native_event = fields.String()
    action = fields.String(allow_none=True)
    service_id = fields.Integer(allow_none=True)
    service_ref = fields.String(allow_none=True)
    occurred_at = fields.DateTime()
    received_at = fields.DateTime()
    status = fields.Enum(EventStatus, by_value=True)
    reason = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    generation = fields.Integer(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    resolved_by = fields.String(allow_none=True)


class CallSchema(Schema):
    """One HTTP call to the mail server (never a body or credentials)."""

    method = fields.String()
    path = fields.String()
    status = fields.Integer(allow_none=True)
    ms = fields.Integer()
    error = fields.String(allow_none=True)


class AttemptSchema(Schema):
    """One reconcile of the event's service."""

    id = fields.Integer()
    generation = fields.Integer()
    worker = fields.String()
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    outcome = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    calls = fields.List(fields.Nested(CallSchema))


class AuditSchema(Schema):
    """One audit-log entry."""

    id = fields.Integer()
    at = fields.DateTime()
    actor = fields.String()
    via = fields.String()
    action = fields.String()
    event_id = fields.Integer(allow_none=True)
    service_id = fields.Integer(allow_none=True)
    detail = fields.Dict()


def event_fields(event: Any) -> dict[str, Any]:
    """An event's attributes as EventSchema names them (to combine with more keys)."""
    return {name: getattr(event, name) for name in EventSchema().fields}


class EventDetailSchema(EventSchema):
    """One event with its redacted payload, its service's attempts and its audit trail."""

    payload = fields.Dict(metadata={"description": "as received, secrets redacted"})
    attempts = fields.List(fields.Nested(AttemptSchema))
    audit = fields.List(fields.Nested(AuditSchema))


class EventPageSchema(Schema):
    """A page of events, newest first, with the status counts of the whole filter."""

    events = fields.List(fields.Nested(EventSchema))
    next_before = fields.Integer(
        allow_none=True, metadata={"description": "pass as before= for the next page"}
    )
    prev_after = fields.Integer(
        allow_none=True, metadata={"description": "pass as after= for the previous page"}
    )
    counts = fields.Dict(
        keys=fields.String(), values=fields.Integer(), metadata={"description": "per status"}
    )


class OutcomeSchema(Schema):
    """How a reconcile ended."""

    status = fields.String(metadata={"description": "applied | retry | failed | busy"})
    reason = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    calls = fields.Integer()
    write_calls = fields.Integer()


class LinkSchema(_Strict):
    """POST /api/services/{id}/link: bind the service to an existing DomainAdmin."""

    username = fields.String(
        required=True,
        validate=_username,
        metadata={
            "description": "the DomainAdmin's username on the mail server",
            "pattern": f"^{USERNAME.pattern}$",
            "example": "mail1001",
        },
    )
    confirm = _flag(False, "false (default) only shows the account; true binds")
    relink = _flag(False, "move the binding of an already bound service")


class LinkResultSchema(Schema):
    """The account a service is (or would be) bound to."""

    service_id = fields.Integer()
    label = fields.String()
    username = fields.String()
    recovery_email = fields.String()
    domains = fields.List(fields.String())
    enabled = fields.Boolean()
    bound_to = fields.String(allow_none=True)
    linked = fields.Boolean()


class RetryResultSchema(Schema):
    """The answer to a retry."""

    event_id = fields.Integer()
    service_id = fields.Integer()
    requeued = fields.Integer(metadata={"description": "failed events queued again"})
    outcome = fields.Nested(OutcomeSchema, allow_none=True)
    event = fields.Nested(EventSchema)


class BulkRetryResultSchema(Schema):
    """The answer to a bulk retry."""

    services = fields.Integer(metadata={"description": "services queued for a reconcile"})
    events = fields.Integer(metadata={"description": "failed events among them"})
    queued = fields.Boolean(metadata={"description": "false for a dry run"})


class RowSchema(Schema):
    """One field of desired vs actual."""

    label = fields.String()
    desired = fields.String()
    actual = fields.String()
    differs = fields.Boolean()


class ProblemSchema(Schema):
    """A reason and a message."""

    reason = fields.String()
    message = fields.String()


class DriftSchema(Schema):
    """A difference the engine would correct."""

    field = fields.String()
    desired = fields.Raw()
    actual = fields.Raw()


class UsageSchema(Schema):
    """What the mail server last reported the service's DomainAdmin uses; null = not reported."""

    username = fields.String()
    storage_used_mb = fields.Integer(allow_none=True)
    storage_total_mb = fields.Integer(allow_none=True)
    storage_percent = fields.Integer(
        allow_none=True, metadata={"description": "used * 100 // total; null when unknown"}
    )
    mailboxes_used = fields.Integer(allow_none=True)
    mailboxes_limit = fields.Integer(allow_none=True)
    domains_used = fields.Integer(allow_none=True)
    domains_limit = fields.Integer(allow_none=True)
    aliases_used = fields.Integer(allow_none=True)
    aliases_limit = fields.Integer(allow_none=True)
    read_at = fields.String(metadata={"description": "when it was read (ISO 8601, UTC)"})


class ServiceSchema(Schema):
    """A service: desired state, bundle, desired vs actual, drift, what a reconcile would do."""

    service = fields.String(metadata={"description": "how people name it: source:billing id"})
    links = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "self, reconcile, link (API) and console URLs"},
    )
    id = fields.Integer(metadata={"description": "the bridge's internal id (prefer the links)"})
    source = fields.String()
    service_ref = fields.String()
    username = fields.String(allow_none=True)
    domain = fields.String(allow_none=True)
    client_ref = fields.String(allow_none=True)
    client_email = fields.String(allow_none=True)
    product_id = fields.String(allow_none=True)
    tier_key = fields.String(allow_none=True)
    addons = fields.Dict()
    desired_state = fields.String(allow_none=True)
    generation = fields.Integer()
    applied_generation = fields.Integer()
    job_due_at = fields.DateTime(allow_none=True)
    last_reason = fields.String(allow_none=True)
    last_message = fields.String(allow_none=True)
    tier = fields.String(allow_none=True)
    bundle = fields.Dict(allow_none=True)
    bundle_error = fields.Nested(ProblemSchema, allow_none=True)
    mailserver_error = fields.Nested(
        ProblemSchema,
        allow_none=True,
        metadata={"description": "set when the mail server could not be read"},
    )
    plan_error = fields.Nested(ProblemSchema, allow_none=True)
    in_sync = fields.Boolean()
    rows = fields.List(fields.Nested(RowSchema))
    drift = fields.List(fields.Nested(DriftSchema))
    steps = fields.List(fields.String(), metadata={"description": "what a reconcile would do"})
    events = fields.List(fields.Nested(EventSchema))
    audit = fields.List(fields.Nested(AuditSchema))
    usage = fields.Nested(
        UsageSchema,
        allow_none=True,
        metadata={"description": "last usage read (every usage.refresh_h); null before the first"},
    )


class UnmappedSchema(Schema):
    """A product events wait on."""

    source = fields.String()
    product_id = fields.String(allow_none=True)
    events = fields.Integer()
    services = fields.Integer()
    mapped_now = fields.Boolean(
        metadata={"description": "the config maps it now: retry those events"}
    )


class MappingsSchema(Schema):
    """Tiers, products and add-ons as configured, and products waiting for a mapping."""

    tiers = fields.Dict()
    products = fields.Dict()
    addons = fields.Dict()
    unmapped = fields.List(fields.Nested(UnmappedSchema))


class MeSchema(Schema):
    """Who the token belongs to."""

    email = fields.String()
    role = fields.String()
