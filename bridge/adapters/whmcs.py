"""WHMCS: the envelope our WHMCS server module posts (docs/design.md#whmcs-envelope)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from bridge.adapters.base import (
    Password,
    Username,
    billing_id,
    billing_time,
    by_field,
    check_json,
    clamp_time,
    email,
    options,
    redact,
    text,
)
from bridge.lifecycle import Action, BillingEvent, PayloadError, TransferKind

#: WHMCS module function (or our hook's name) -> normalized action.
ACTIONS: dict[str, Action] = {
    "CreateAccount": Action.CREATE,
    "SuspendAccount": Action.SUSPEND,
    "UnsuspendAccount": Action.UNSUSPEND,
    "TerminateAccount": Action.TERMINATE,
    "ChangePackage": Action.CHANGE_PACKAGE,
    "ChangePassword": Action.CHANGE_PASSWORD,
    "Renew": Action.RENEW,
    "MoveService": Action.TRANSFER,
    "TransferOwnership": Action.TRANSFER,
}
NEEDS_PASSWORD = {"CreateAccount", "ChangePassword"}
NEEDS_CLIENT_EMAIL = {"CreateAccount", "MoveService"}


#: The client details the adapter reads; the rest (address, phone, the client's custom
#: fields) is not stored.
CLIENT_KEYS = ("email", "firstname", "lastname", "companyname")


class ClientDetailsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = email(load_default=None)
    firstname = text(255, load_default=None, allow_none=True)
    lastname = text(255, load_default=None, allow_none=True)
    companyname = text(255, load_default=None, allow_none=True)


class ParamsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    serviceid = billing_id(required=True)
    pid = billing_id(required=True)
    userid = billing_id(required=True)
    username = Username(load_default="", allow_none=True)
    domain = text(255, load_default="", allow_none=True)
    password = Password(load_default=None, allow_none=True)
    clientsdetails = fields.Nested(ClientDetailsSchema, load_default=dict)
    configoptions = options(load_default=dict)
    configoption1 = text(64, load_default="", allow_none=True)
    suspendreason = fields.String(load_default=None, allow_none=True)
    target_serviceid = billing_id(load_default=None)
    previous_userid = billing_id(load_default=None)


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event = fields.String(
        required=True,
        validate=validate.OneOf(list(ACTIONS), error="must be one of: {choices}"),
    )
    occurred_at = billing_time(required=True)
    params = fields.Nested(ParamsSchema, required=True)

    @validates_schema
    def per_event_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        event, params = data.get("event"), data.get("params") or {}
        errors: dict[str, list[str]] = {}
        if event in NEEDS_PASSWORD and not params.get("password"):
            errors["password"] = [f"required for {event}"]
        if event in NEEDS_CLIENT_EMAIL and not (params.get("clientsdetails") or {}).get("email"):
            errors["clientsdetails"] = [f"email is required for {event}"]
        if event == "CreateAccount" and not params.get("username"):
            errors["username"] = ["required for CreateAccount (the DomainAdmin's username)"]
        if event == "TransferOwnership" and not params.get("target_serviceid"):
            errors["target_serviceid"] = ["required for TransferOwnership"]
        if event == "MoveService" and not params.get("previous_userid"):
            errors["previous_userid"] = ["required for MoveService"]
        if errors:
            raise ValidationError({"params": errors})


def _name(details: dict[str, Any]) -> str | None:
    parts = [details.get("firstname"), details.get("lastname")]
    name = " ".join(p for p in parts if p) or details.get("companyname")
    return name[:255] if name else None


def stored(body: dict[str, Any]) -> dict[str, Any]:
    """What is kept of the envelope: no `server*` key, no custom field (the adapter uses
    none), only the client details it reads; secrets redacted."""
    params = {
        k: v
        for k, v in body["params"].items()
        if not k.startswith("server") and k != "customfields"
    }
    details = params.get("clientsdetails")
    if isinstance(details, dict):
        params["clientsdetails"] = {k: details[k] for k in CLIENT_KEYS if k in details}
    return dict(redact({**body, "params": params}))


# One instance for every request: building a schema costs more than loading with it.
_ENVELOPE = EnvelopeSchema()


class WhmcsAdapter:
    """Parses the WHMCS connector's envelope."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent:
        """Validate the envelope and map the module function to an action."""
        check_json(body)
        try:
            data = _ENVELOPE.load(body)
        except ValidationError as exc:
            raise PayloadError(by_field(exc.messages)) from None
        event, params = data["event"], data["params"]
        details = params["clientsdetails"]
        kind = None
        if event == "MoveService":
            kind = TransferKind.CLIENT
        elif event == "TransferOwnership":
            kind = TransferKind.OWNERSHIP
        return BillingEvent(
            action=ACTIONS[event],
            native_event=event,
            service_ref=str(params["serviceid"]),
            occurred_at=clamp_time(data["occurred_at"], signed_at),
            payload=stored(body),
            client_ref=str(params["userid"]),
            client_email=details.get("email"),
            client_name=_name(details),
            product_id=str(params["pid"]),
            tier_key=(params.get("configoption1") or "").strip() or None,
            addons=dict(params["configoptions"]),
            username=params["username"] or None,
            domain=params["domain"] or None,
            password=params["password"],
            password_field="params.password",
            reason=params["suspendreason"],
            transfer_kind=kind,
            previous_client_ref=str(params["previous_userid"])
            if params["previous_userid"]
            else None,
            target_service_ref=str(params["target_serviceid"])
            if params["target_serviceid"]
            else None,
        )
