"""What every billing-system adapter produces: one source-agnostic BillingEvent."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.errors import BridgeError


class Action(enum.StrEnum):
    """Normalized lifecycle actions (DESIGN.md section 1)."""

    CREATE = "create"
    SUSPEND = "suspend"
    UNSUSPEND = "unsuspend"
    TERMINATE = "terminate"
    CHANGE_PACKAGE = "change_package"
    CHANGE_PASSWORD = "change_password"
    TRANSFER = "transfer"
    RENEW = "renew"


class TransferKind(enum.StrEnum):
    """A transfer either moves the billing service to another client or moves mail ownership."""

    CLIENT = "client"
    OWNERSHIP = "ownership"


@dataclass(frozen=True)
class BillingEvent:
    """One verified lifecycle event, whatever billing system sent it."""

    action: Action
    native_event: str
    service_ref: str
    occurred_at: datetime
    payload: dict[str, Any]
    client_ref: str | None = None
    client_email: str | None = None
    client_name: str | None = None
    product_id: str | None = None
    tier_key: str | None = None
    addons: dict[str, Any] = field(default_factory=dict)
    username: str | None = None
    domain: str | None = None
    password: str | None = field(default=None, repr=False)
    password_field: str = "password"
    reason: str | None = None
    transfer_kind: TransferKind | None = None
    previous_client_ref: str | None = None
    target_service_ref: str | None = None


@dataclass(frozen=True)
class Ignored:
    """A verified event that provisions nothing (e.g. a scheduled, not yet due, cancel)."""

    native_event: str
    service_ref: str | None
    message: str
    payload: dict[str, Any]


class PayloadError(BridgeError):
    """The body is JSON but not the shape this source sends; `errors` by field."""

    http_status = 422

    def __init__(self, errors: dict[str, Any], message: str = "the payload is not valid") -> None:
        super().__init__("invalid_payload", message, errors=errors)


class Adapter(Protocol):
    """One module per billing system: parse its verified JSON object into an event."""

    def parse(self, body: dict[str, Any], signed_at: int) -> BillingEvent | Ignored:
        """Turn a verified JSON object into a BillingEvent, or say why it is ignored."""
        ...


REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"pass|secret|token|accesshash|api_?key", re.IGNORECASE)


def redact(value: Any) -> Any:
    """A copy of a payload with every secret-looking value replaced.

    Keys that look like secrets are masked; Blesta-style service fields flagged
    `encrypted` have their value masked too (Blesta sends them already decrypted).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        encrypted = str(value.get("encrypted", "0")) in ("1", "true", "True") or bool(
            _SECRET_KEY.search(str(value.get("key", "")))  # {"key": "x_password", "value": ...}
        )
        if value.get("option_type") == "password" and value.get("option_value"):
            value = {**value, "option_value": REDACTED}
        for key, item in value.items():
            if _SECRET_KEY.search(str(key)) and item not in (None, ""):
                out[key] = REDACTED
            elif encrypted and key == "value":
                out[key] = REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
