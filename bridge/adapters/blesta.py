"""Blesta: its own service event data, signed and posted by our Blesta plugin.

The plugin (integrations/blesta) listens to Services.addAfter, editAfter, suspendAfter,
unsuspendAfter, cancelAfter and renewAfter, and posts Blesta's event params
(`service_id`, `vars`, `old_service`) plus the service as it is after the event
(`service`, with `package` and its `meta`) and the `client`, under `event`
(docs/design.md#blesta-signed-events). Blesta's event data has no time, so the plugin
adds `occurred_at` (when the event fired; kept when it re-sends from its outbox); without
it, the signed webhook timestamp is used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from bridge.adapters.base import by_field, redact
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


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event = fields.String(
        required=True, validate=validate.OneOf(EVENTS, error="must be one of: {choices}")
    )
    service_id = fields.Integer(required=True, validate=validate.Range(min=1))
    vars = fields.Dict(load_default=dict)
    old_service = fields.Dict(load_default=dict, allow_none=True)
    service = fields.Dict(load_default=dict, allow_none=True)
    client = fields.Dict(load_default=dict, allow_none=True)
    occurred_at = fields.AwareDateTime(load_default=None, format="iso")


def _fields(service: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for item in service.get("fields") or []:
        if isinstance(item, dict) and "key" in item:
            out[str(item["key"])] = item.get("value")
    return out


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if mapping.get(key):
            return str(mapping[key])
    return None


def _options(vars_: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    if isinstance(vars_.get("configoptions"), dict):
        return dict(vars_["configoptions"])
    out: dict[str, Any] = {}
    for option in service.get("options") or []:
        if isinstance(option, dict) and option.get("option_name"):
            quantity = option.get("qty")
            out[str(option["option_name"])] = (
                option.get("option_value") if option.get("option_type") != "quantity" else quantity
            )
    return out


def _occurred_at(sent: datetime | None, signed_at: int) -> datetime:
    """When Blesta fired the event (sent by the plugin, kept when it re-sends from its
    outbox), never later than the signature; the signature time when absent."""
    signed = datetime.fromtimestamp(signed_at, UTC)
    return min(sent, signed) if sent is not None else signed


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


# One instance for every request: building a schema costs more than loading with it.
_ENVELOPE = EnvelopeSchema()


class BlestaAdapter:
    """Parses the Blesta plugin's signed event posts."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent | Ignored:
        """Decide the action from the event name and what changed."""
        try:
            data = _ENVELOPE.load(body)
        except ValidationError as exc:
            raise PayloadError(by_field(exc.messages)) from None
        event, vars_ = data["event"], data["vars"]
        old = data["old_service"] or {}
        service = data["service"] or old
        client = data["client"] or {}
        service_ref = str(data["service_id"])
        payload = redact(body)
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
        if action in (Action.CREATE, Action.TRANSFER) and not client.get("email"):
            raise PayloadError({"client": {"email": [f"required for {event} ({action})"]}})
        package = service.get("package") or old.get("package") or {}
        meta: dict[str, Any] = package["meta"] if isinstance(package.get("meta"), dict) else {}
        service_fields = {**_fields(old), **_fields(service)}
        domain = _first(service_fields, DOMAIN_FIELDS) or _str(vars_.get("domain"))
        username = _first(service_fields, USERNAME_FIELDS) or _str(vars_.get("username"))
        if action is Action.CREATE and not username:
            raise PayloadError(
                {"service": {"fields": ["a mailbridge_username (or username) field is required"]}}
            )
        name = " ".join(p for p in (client.get("first_name"), client.get("last_name")) if p)
        return BillingEvent(
            action=action,
            native_event=event,
            service_ref=service_ref,
            occurred_at=_occurred_at(data["occurred_at"], signed_at),
            payload=payload,
            client_ref=_str(client.get("id"))
            or _str(vars_.get("client_id"))
            or _str(old.get("client_id")),
            client_email=client.get("email"),
            client_name=name or client.get("company") or None,
            product_id=_str(package.get("id")),
            tier_key=_str(meta.get("plan")),
            addons=_options(vars_, service),
            username=username,
            domain=domain,
            password=password,
            password_field="vars.password",
            reason=_str(vars_.get("suspension_reason")),
            transfer_kind=transfer_kind,
            previous_client_ref=previous_client,
        )
