"""Realistic sample payloads per billing system, for `bridge hooks send` and the tests."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

from bridge.lifecycle import Action

WHMCS_EVENTS = {
    Action.CREATE: "CreateAccount",
    Action.SUSPEND: "SuspendAccount",
    Action.UNSUSPEND: "UnsuspendAccount",
    Action.TERMINATE: "TerminateAccount",
    Action.CHANGE_PACKAGE: "ChangePackage",
    Action.CHANGE_PASSWORD: "ChangePassword",
    Action.RENEW: "Renew",
    Action.TRANSFER: "MoveService",
}


def sample_password() -> str:
    """A random password that meets the NMS policy."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(13))
    return (
        body
        + secrets.choice(string.ascii_uppercase)
        + secrets.choice(string.ascii_lowercase)
        + secrets.choice(string.digits)
    )


def whmcs_envelope(
    action: Action,
    service: int,
    *,
    product: int = 1,
    client: int | None = None,
    previous_client: int | None = None,
    to_service: int | None = None,
    addons: dict[str, Any] | None = None,
    password: str | None = None,
    tier_key: str = "",
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """What the WHMCS module posts for one module call (docs/design.md#whmcs-envelope)."""
    client = client or 500 + service % 1000
    event = "TransferOwnership" if to_service else WHMCS_EVENTS[action]
    params: dict[str, Any] = {
        "serviceid": service,
        "pid": product,
        "userid": client,
        "domain": f"client{service}.example.net",
        "username": f"mail{service}",
        "producttype": "other",
        "moduletype": "mailbridge",
        "configoption1": tier_key,
        "configoptions": dict(addons or {}),
        "customfields": {},
        "clientsdetails": {
            "id": client,
            "userid": client,
            "firstname": "Dana",
            "lastname": f"Client{client}",
            "companyname": "Example Ltd",
            "email": f"owner{client}@example.org",
            "language": "english",
        },
    }
    if action in (Action.CREATE, Action.CHANGE_PASSWORD):
        params["password"] = password or sample_password()
    if action is Action.SUSPEND:
        params["suspendreason"] = "Overdue on payment"
    if event == "MoveService":
        params["previous_userid"] = previous_client or client + 1
    if to_service:
        params["target_serviceid"] = to_service
    when = occurred_at or datetime.now(UTC)
    return {"event": event, "occurred_at": when.isoformat(), "params": params}


BLESTA_EVENTS = {
    Action.CREATE: "Services.addAfter",
    Action.SUSPEND: "Services.suspendAfter",
    Action.UNSUSPEND: "Services.unsuspendAfter",
    Action.TERMINATE: "Services.cancelAfter",
    Action.CHANGE_PACKAGE: "Services.editAfter",
    Action.CHANGE_PASSWORD: "MailBridge.changePassword",
    Action.RENEW: "Services.renewAfter",
    Action.TRANSFER: "Services.editAfter",
}


def blesta_body(
    action: Action,
    service: int,
    *,
    product: int = 1,
    client: int | None = None,
    previous_client: int | None = None,
    addons: dict[str, Any] | None = None,
    password: str | None = None,
    tier_key: str = "",
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """What our Blesta module posts for one service event (docs/design.md#blesta-signed-events).

    With `occurred_at` the body carries it (as the module does) and is the same on every call.
    """
    client = client or 30 + service % 1000
    options = [
        {"option_name": name, "option_type": "quantity", "qty": qty, "option_value": None}
        for name, qty in (addons or {}).items()
    ]
    service_obj = {
        "id": service,
        "client_id": client,
        "pricing_id": 100 + product,
        "status": "active",
        "fields": [
            {"key": "mailbridge_username", "value": f"blesta{service}", "encrypted": 0},
            {"key": "mailbridge_domain", "value": f"client{service}.example.com", "encrypted": 0},
        ],
        "options": options,
        "package": {
            "id": product,
            "name": f"Mail package {product}",
            "meta": {"plan": tier_key} if tier_key else {},
        },
    }
    old = dict(service_obj)
    vars_: dict[str, Any] = {"use_module": "true"}
    if action is Action.CREATE:
        vars_.update(status="active", client_id=client, pricing_id=100 + product)
    elif action is Action.SUSPEND:
        vars_.update(status="suspended", suspension_reason="Invoice overdue")
        service_obj["status"] = "suspended"
    elif action is Action.UNSUSPEND:
        vars_.update(status="active")
        old["status"] = "suspended"
    elif action is Action.TERMINATE:
        vars_.update(
            status="canceled",
            date_canceled=(occurred_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S"),
        )
        service_obj["status"] = "canceled"
    elif action is Action.CHANGE_PACKAGE:
        vars_.update(pricing_id=100 + product, configoptions=dict(addons or {}))
        old["pricing_id"] = 0
    elif action is Action.TRANSFER:
        vars_.update(client_id=client)
        old["client_id"] = previous_client or client + 1
    elif action is Action.CHANGE_PASSWORD:
        vars_.update(password=password or sample_password())
    when = {"occurred_at": occurred_at.isoformat()} if occurred_at is not None else {}
    return {
        **when,
        "event": BLESTA_EVENTS[action],
        "service_id": service,
        "vars": vars_,
        "old_service": old,
        "service": service_obj,
        "client": {
            "id": client,
            "first_name": "Robin",
            "last_name": f"Client{client}",
            "company": "Example GmbH",
            "email": f"robin{client}@example.com",
        },
    }


def sample(kind: str, action: Action, service: int, **options: Any) -> dict[str, Any]:
    """A sample payload for a source of this kind."""
    if kind == "whmcs":
        return whmcs_envelope(action, service, **options)
    options.pop("to_service", None)
    return blesta_body(action, service, **options)
