"""Intake without Flask: parse, hash, record, and apply inline within the answer's budget.

The hooks view (bridge/hooks/views.py) checks the signature and renders the answer; this
module decides it. One write transaction (a Core connection, one commit) stores the event
and folds it into its service (`ledger.record_event()`, three statements); the password hash
and the JSON parsing happen before it, so SQLite's write lock is never held through them;
the inline reconcile runs after it, with no transaction open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from bridge import ledger
from bridge.adapters import ADAPTERS
from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import BillingEvent, EventStatus, Ignored, PayloadError
from bridge.mailserver.profile import load_profile
from bridge.models import Event
from bridge.passwords import check_and_hash
from bridge.provisioning.jobs import retry_service, run_inline
from bridge.provisioning.outcome import log_event
from bridge.runtime import Runtime

log = logging.getLogger(__name__)

_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class StorageUnavailableError(BridgeError):
    """The database did not take the event: nothing was stored, the sender must resend."""

    http_status = 503

    def __init__(self) -> None:
        super().__init__(
            "storage_unavailable",
            "the bridge could not store the event; nothing was recorded, send it again",
        )


@dataclass(frozen=True)
class Receipt:
    """What the billing system is told about one delivery (docs/design.md#answers)."""

    event_id: int
    status: EventStatus
    service_ref: str | None
    reason: str | None
    message: str | None
    next_attempt_at: datetime | None
    duplicate: bool = False
    #: The bridge's own service row (not shown to the billing system).
    service_id: int | None = None

    @classmethod
    def of(cls, event: Event, *, duplicate: bool = False) -> Receipt:
        """The receipt of a stored event (read while its session is open)."""
        due = None
        if event.status is EventStatus.QUEUED and event.service is not None:
            due = event.service.job_due_at
        return cls(
            event.id,
            event.status,
            event.service_ref,
            event.reason,
            event.message,
            due,
            duplicate,
            event.service_id,
        )

    @classmethod
    def of_recorded(cls, event: ledger.Recorded) -> Receipt:
        """The receipt of an event `ledger.record_event()` has just stored."""
        due = event.job_due_at if event.status is EventStatus.QUEUED else None
        return cls(
            event.id,
            event.status,
            event.service_ref,
            event.reason,
            event.message,
            due,
            False,
            event.service_id,
        )


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; BridgeError (400/422) with a reason otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BridgeError("invalid_json", "the body is not UTF-8 text", http_status=400) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BridgeError(
            "invalid_json", f"the body is not valid JSON: {str(exc)[:200]}", http_status=400
        ) from None
    if not isinstance(data, dict):
        raise PayloadError(
            {"_schema": [f"expected a JSON object, got a JSON {_JSON_TYPES[type(data)]}"]},
            "the body must be a JSON object",
        )
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_and_hash(
    kind: str, body: bytes, signed_at: int
) -> tuple[BillingEvent | Ignored, str | None]:
    """The normalized event, without its password, and that password's hash."""
    parsed = ADAPTERS[kind].parse(parse_object(body), signed_at)
    if not isinstance(parsed, BillingEvent) or parsed.password is None:
        return parsed, None
    password_hash = check_and_hash(parsed.password, parsed.password_field)
    return dataclasses.replace(parsed, password=None), password_hash


def accept(rt: Runtime, source: str, webhook_id: str, body: bytes, signed_at: int) -> Receipt:
    """Store one verified delivery (once), then apply it inline if configured; the receipt.

    Raises BridgeError for a body the source would never send (nothing is stored) and
    StorageUnavailableError when the database cannot take it.
    """
    kind = rt.settings.sources[source].kind
    digest = hashlib.sha256(body).hexdigest()
    try:
        parsed, password_hash = parse_and_hash(kind, body, signed_at)
        try:
            with rt.engine.begin() as conn:
                recorded = ledger.record_event(
                    conn,
                    source=source,
                    webhook_id=webhook_id,
                    body_sha256=digest,
                    parsed=parsed,
                    password_hash=password_hash,
                    mappings=rt.settings.mappings,
                    now=utcnow(),
                    zero_quota=lambda: _zero_quota(conn, rt),
                )
        except ledger.AlreadyStoredError:
            # A repeat (or the same delivery racing us in another process): its outcome.
            return _redelivered(rt, source, webhook_id, digest)
    except BridgeError as exc:
        log.info("hook refused source=%s webhook_id=%s reason=%s", source, webhook_id, exc.reason)
        raise
    except OperationalError:
        log.exception("hook not stored source=%s webhook_id=%s", source, webhook_id)
        raise StorageUnavailableError() from None
    receipt = Receipt.of_recorded(recorded)
    fields = recorded.log_fields()
    if receipt.status is not EventStatus.QUEUED:
        log_event(fields)
        return receipt
    receipt = _apply_inline(rt, receipt)
    if receipt.status is EventStatus.QUEUED:
        # An outcome decided by the inline reconcile was logged there.
        log_event({**fields, "reason": receipt.reason})
    return receipt


def _zero_quota(conn: Connection, rt: Runtime) -> str | None:
    """What `bridge check-server` saw a quota of 0 do on this server (None: not run)."""
    profile = load_profile(conn, rt.settings.mailserver.base_url)
    return profile.zero_quota if profile else None


def _apply_inline(rt: Runtime, receipt: Receipt) -> Receipt:
    """Reconcile the event's service within intake.inline_timeout_s; the new receipt."""
    if rt.settings.intake.inline_timeout_s <= 0 or receipt.service_id is None:
        return receipt
    run_inline(rt, receipt.service_id)
    return _receipt(rt, receipt.event_id, duplicate=receipt.duplicate)


def _receipt(rt: Runtime, event_id: int, *, duplicate: bool) -> Receipt:
    with rt.reads() as session:
        event = session.get(Event, event_id)
        assert event is not None
        return Receipt.of(event, duplicate=duplicate)


def _redelivered(rt: Runtime, source: str, webhook_id: str, digest: str) -> Receipt:
    """A repeat delivery. A billing system re-sending an event that failed (WHMCS's Module
    Queue "Retry") means "try again": the service is reconciled again before answering."""
    with rt.transaction() as session:
        event = ledger.find_event(session, source, webhook_id, digest)
        if event is None:  # pragma: no cover - the row that raced us is committed
            raise StorageUnavailableError()
        again = event.status is EventStatus.FAILED and event.service_id is not None
        if again:
            assert event.service_id is not None
            retry_service(session, event.service_id, utcnow())
        receipt = Receipt.of(event, duplicate=True)
    return _apply_inline(rt, receipt) if again else receipt
