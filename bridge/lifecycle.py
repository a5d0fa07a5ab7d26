"""The vocabulary every layer shares: lifecycle actions, the normalized billing event, the
states of an event and of a service. Pure data; imports nothing of the bridge but errors.

See docs/design.md for the model these words describe.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.errors import BridgeError


class Action(enum.StrEnum):
    """Normalized lifecycle actions (docs/design.md#lifecycle-actions)."""

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


class EventStatus(enum.StrEnum):
    """Where one event stands."""

    RECEIVED = "received"
    QUEUED = "queued"
    APPLIED = "applied"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    IGNORED = "ignored"


class ServiceState(enum.StrEnum):
    """What the billing system wants the DomainAdmin to be."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


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


#: Which parts of the desired state ("aspects") each action sets; a transfer sets "owner"
#: when the service moves to another client and "ownership" when mail ownership moves.
ASPECTS: dict[Action, tuple[str, ...]] = {
    Action.CREATE: ("lifecycle", "package", "password", "owner"),
    Action.SUSPEND: ("lifecycle",),
    Action.UNSUSPEND: ("lifecycle",),
    Action.TERMINATE: ("lifecycle",),
    Action.CHANGE_PACKAGE: ("package",),
    Action.CHANGE_PASSWORD: ("password",),
    Action.RENEW: (),
}


def aspects_of(action: Action, transfer_kind: TransferKind | None = None) -> tuple[str, ...]:
    """The desired-state aspects an action sets."""
    if action is Action.TRANSFER:
        return ("owner",) if transfer_kind is TransferKind.CLIENT else ("ownership",)
    return ASPECTS[action]
