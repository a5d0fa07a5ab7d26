"""Blesta: its own service event data, signed and posted by our Blesta module.

The module (integrations/blesta/components/modules/mail_bridge) posts, from each provisioning
step (addService, editService, suspendService, unsuspendService, cancelService, renewService,
changeServicePackage; a client move through its small plugin), Blesta's service data
(`service_id`, `vars`, `old_service`) plus the service as it is after the step (`service`,
with `package` and its `meta`) and the `client`, under `event`
(docs/design.md#blesta-signed-events). Blesta's data has no time, so the module adds
`occurred_at` (when the step ran; kept when the same step is sent again); without it, the
signed webhook timestamp is used.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from bridge.adapters.base import (
    Password,
    Username,
    billing_id,
    billing_time,
    by_field,
    check_json,
    check_value,
    clamp_time,
    email,
    options,
    redact,
    text,
)
from bridge.lifecycle import Action, BillingEvent, Ignored, PayloadError, TransferKind

EVENTS = (
    "Services.addAfter",
    "Services.editAfter",
    "Services.suspendAfter",
    "Services.unsuspendAfter",
    "Services.cancelAfter",
    "Services.renewAfter",
    "MailBridge.changePassword",
)
USERNAME_FIELDS = ("mailbridge_username", "username")
DOMAIN_FIELDS = ("mailbridge_domain", "domain", "mail_domain")
#: The service fields (Blesta's module fields: a service's custom fields) the adapter reads;
#: no other is stored. Blesta also passes them in `vars`, by their key.
USED_FIELDS = (*USERNAME_FIELDS, *DOMAIN_FIELDS)
#: The keys of `vars` the adapter reads; no other is stored.
USED_VARS = (
    "status",
    "client_id",
    "pricing_id",
    "configoptions",
    "suspension_reason",
    "password",
    *USED_FIELDS,
)


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event = fields.String(
        required=True, validate=validate.OneOf(EVENTS, error="must be one of: {choices}")
    )
    service_id = billing_id(required=True)
    vars = fields.Dict(load_default=dict)
    old_service = fields.Dict(load_default=dict, allow_none=True)
    service = fields.Dict(load_default=dict, allow_none=True)
    client = fields.Dict(load_default=dict, allow_none=True)
    occurred_at = billing_time(load_default=None)


def _fields(service: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for item in _list(service.get("fields")):
        if isinstance(item, dict) and "key" in item:
            out[str(item["key"])] = item.get("value")
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, str]:
    """The first non-empty value among keys, and the key it was found under."""
    for key in keys:
        if mapping.get(key):
            return mapping[key], key
    return None, keys[0]


def _options(vars_: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    if isinstance(vars_.get("configoptions"), dict):
        return dict(check_value(options(), vars_["configoptions"], "vars.configoptions") or {})
    out: dict[str, Any] = {}
    for option in _list(service.get("options")):
        if isinstance(option, dict) and option.get("option_name"):
            if option.get("option_type") == "password":
                continue  # a secret, never an add-on
            quantity = option.get("qty")
            out[str(option["option_name"])] = (
                option.get("option_value") if option.get("option_type") != "quantity" else quantity
            )
    return dict(check_value(options(), out, "service.options") or {})


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a post: of the service fields and `vars` only what the adapter reads
    (no other custom field is stored at all); secrets among the rest redacted."""
    out = dict(body)
    if isinstance(body.get("vars"), dict):
        out["vars"] = {k: v for k, v in body["vars"].items() if k in USED_VARS}
    for side in ("old_service", "service"):
        obj = body.get(side)
        if isinstance(obj, dict) and isinstance(obj.get("fields"), list):
            used = [f for f in obj["fields"] if isinstance(f, dict) and f.get("key") in USED_FIELDS]
            out[side] = {**obj, "fields": used}
    return dict(redact(out))


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


# One instance for every request: building a schema costs more than loading with it.
_ENVELOPE = EnvelopeSchema()


class BlestaAdapter:
    """Parses the Blesta module's signed event posts."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent | Ignored:
        """Decide the action from the event name and what changed."""
        check_json(body)
        try:
            data = _ENVELOPE.load(body)
        except ValidationError as exc:
            raise PayloadError(by_field(exc.messages)) from None
        event, vars_ = data["event"], data["vars"]
        old = data["old_service"] or {}
        service = data["service"] or old
        client = data["client"] or {}
        service_ref = str(data["service_id"])
        payload = _stored(body)
        transfer_kind = None
        previous_client = None

        action: Action | None
        if event == "Services.addAfter":
            action = Action.CREATE if vars_.get("status") == "active" else None
            why = "a service added as pending is provisioned when it becomes active"
        elif event == "Services.editAfter":
            action, why = None, "the edit changed nothing the mail server holds"
            old_client, new_client = _str(old.get("client_id")), _str(vars_.get("client_id"))
            old_pricing, new_pricing = _str(old.get("pricing_id")), _str(vars_.get("pricing_id"))
            if old.get("status") == "pending" and vars_.get("status") == "active":
                action = Action.CREATE
            elif new_client and old_client and new_client != old_client:
                action, transfer_kind, previous_client = (
                    Action.TRANSFER,
                    TransferKind.CLIENT,
                    old_client,
                )
            elif (new_pricing and new_pricing != old_pricing) or "configoptions" in vars_:
                action = Action.CHANGE_PACKAGE
        elif event == "Services.cancelAfter":
            action = Action.TERMINATE if vars_.get("status") == "canceled" else None
            why = "a scheduled cancellation is applied when Blesta cancels the service"
        elif event == "MailBridge.changePassword":
            action, why = Action.CHANGE_PASSWORD, ""
        else:
            action = {
                "Services.suspendAfter": Action.SUSPEND,
                "Services.unsuspendAfter": Action.UNSUSPEND,
                "Services.renewAfter": Action.RENEW,
            }[event]
            why = ""
        if action is None:
            return Ignored(
                native_event=event, service_ref=service_ref, message=why, payload=payload
            )

        password = vars_.get("password") if isinstance(vars_.get("password"), str) else None
        if action is Action.CHANGE_PASSWORD and not password:
            raise PayloadError({"vars": {"password": ["required for MailBridge.changePassword"]}})
        password = check_value(Password(), password, "vars.password")
        email_ = check_value(email(), client.get("email"), "client.email")
        if action in (Action.CREATE, Action.TRANSFER) and not email_:
            raise PayloadError({"client": {"email": [f"required for {event} ({action})"]}})
        package = service.get("package") or old.get("package") or {}
        package = package if isinstance(package, dict) else {}
        meta: dict[str, Any] = package["meta"] if isinstance(package.get("meta"), dict) else {}
        service_fields = {**_fields(old), **_fields(service)}
        domain = _read(text(255), DOMAIN_FIELDS, service_fields, vars_, "domain")
        username = _read(Username(), USERNAME_FIELDS, service_fields, vars_, "username")
        if action is Action.CREATE and not username:
            raise PayloadError(
                {"service": {"fields": ["a mailbridge_username (or username) field is required"]}}
            )
        name_parts = [
            check_value(text(255), client.get(key), f"client.{key}")
            for key in ("first_name", "last_name", "company")
        ]
        name = " ".join(p for p in name_parts[:2] if p) or name_parts[2]
        client_ref = (
            _id(client.get("id"), "client.id")
            or _id(vars_.get("client_id"), "vars.client_id")
            or _id(old.get("client_id"), "old_service.client_id")
        )
        return BillingEvent(
            action=action,
            native_event=event,
            service_ref=service_ref,
            occurred_at=clamp_time(data["occurred_at"], signed_at),
            payload=payload,
            client_ref=client_ref,
            client_email=email_,
            client_name=name[:255] if name else None,
            product_id=_id(package.get("id"), "service.package.id"),
            tier_key=check_value(text(64), meta.get("plan"), "service.package.meta.plan"),
            addons=_options(vars_, service),
            username=username,
            domain=domain,
            password=password,
            password_field="vars.password",
            reason=_str(vars_.get("suspension_reason")),
            transfer_kind=transfer_kind,
            previous_client_ref=previous_client,
        )


def _id(value: Any, path: str) -> str | None:
    """A billing id (an int or its digits) as decimal text; None when absent."""
    number = check_value(billing_id(), value, path)
    return None if number is None else str(number)


def _read(
    field: fields.Field[Any],
    keys: tuple[str, ...],
    service_fields: dict[str, Any],
    vars_: dict[str, Any],
    var: str,
) -> Any:
    """A value from the service fields (first of `keys`), else from `vars`, checked."""
    value, key = _first(service_fields, keys)
    if value:
        return check_value(field, value, f"service.fields.{key}")
    return check_value(field, vars_.get(var), f"vars.{var}")
