"""POST /hooks/<source>: verify the raw bytes, parse, record, answer (DESIGN.md section 4.1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError, OperationalError

from bridge import ledger
from bridge.config import Settings
from bridge.db import get_session, sessions, utcnow
from bridge.errors import BridgeError, error_response
from bridge.hooks import ADAPTERS
from bridge.hooks.base import BillingEvent, PayloadError
from bridge.hooks.signature import SignatureError, verify
from bridge.models import Event, EventStatus
from bridge.passwords import check_and_hash
from bridge.provisioning.jobs import run_inline

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def answer(event: Event, *, duplicate: bool = False) -> ResponseReturnValue:
    """The billing system's answer for a stored event (the answers table of DESIGN.md 4.1)."""
    body: dict[str, Any] = {"event_id": event.id, "status": event.status.value}
    if event.service_ref is not None:
        body["service"] = event.service_ref
    if event.reason:
        body["reason"] = event.reason
    if event.message:
        body["message"] = event.message
    if event.status is EventStatus.QUEUED and event.service is not None:
        due = event.service.job_due_at
        if due is not None:
            body["next_attempt_at"] = due.isoformat()
    if duplicate:
        body["duplicate"] = True
    status = 202 if event.status in (EventStatus.QUEUED, EventStatus.RECEIVED) else 200
    return jsonify(body), status


@bp.post("/hooks/<source>")
def receive(source: str) -> ResponseReturnValue:
    """Accept one signed lifecycle event from a billing system."""
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    src = settings.sources.get(source)
    if src is None:
        return error_response("unknown_source", f'no source "{source}" is configured', 404)
    body = request.get_data(cache=False)
    try:
        signed_at = verify(
            src.secrets,
            request.headers.get("webhook-id"),
            request.headers.get("webhook-timestamp"),
            request.headers.get("webhook-signature"),
            body,
            now=time.time(),
            tolerance_s=src.tolerance_s,
        )
    except SignatureError as exc:
        log.warning("hook refused source=%s reason=%s", source, exc.reason)
        return error_response(exc.reason, exc.message, 401)
    if request.mimetype != "application/json":
        return error_response(
            "unsupported_media_type", "send the body as Content-Type: application/json", 415
        )
    webhook_id = request.headers["webhook-id"]
    digest = hashlib.sha256(body).hexdigest()
    session = get_session()
    try:
        existing = ledger.find_event(session, source, webhook_id, digest)
        if existing is not None:
            return answer(existing, duplicate=True)
        parsed = _parse(src.kind, body, signed_at)
        password_hash = None
        if isinstance(parsed, BillingEvent) and parsed.password is not None:
            password_hash = check_and_hash(parsed.password, parsed.password_field)
            parsed = dataclasses.replace(parsed, password=None)
        try:
            event = ledger.record_event(
                session,
                source=source,
                webhook_id=webhook_id,
                body_sha256=digest,
                parsed=parsed,
                password_hash=password_hash,
                mappings=settings.mappings,
                now=utcnow(),
            )
            session.commit()
        except IntegrityError:
            # The same delivery raced us in another process: answer its outcome.
            session.rollback()
            existing = ledger.find_event(session, source, webhook_id, digest)
            if existing is None:
                raise
            return answer(existing, duplicate=True)
    except BridgeError as exc:
        session.rollback()
        log.info("hook refused source=%s webhook_id=%s reason=%s", source, webhook_id, exc.reason)
        raise
    except OperationalError:
        session.rollback()
        log.exception("hook not stored source=%s webhook_id=%s", source, webhook_id)
        return error_response(
            "storage_unavailable",
            "the bridge could not store the event; nothing was recorded, send it again",
            503,
        )
    if event.status is EventStatus.QUEUED and settings.intake.inline_timeout_s > 0:
        service_id, event_id = event.service_id, event.id
        session.close()
        run_inline(sessions(), current_app.extensions["bridge.mailserver"], settings, service_id)
        event = session.get(Event, event_id, populate_existing=True)
    log.info(
        "event %s source=%s service=%s action=%s status=%s reason=%s",
        event.id,
        source,
        event.service_ref,
        event.action,
        event.status.value,
        event.reason,
    )
    return answer(event)


def _parse(kind: str, body: bytes, signed_at: int) -> Any:
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
    return ADAPTERS[kind].parse(data, signed_at)
