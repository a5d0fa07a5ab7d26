"""POST /hooks/<source>: verify the raw bytes, parse, record, answer (DESIGN.md section 4.1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from bridge import ledger, metrics
from bridge.config import Settings, SourceSettings
from bridge.db import get_session, sessions, utcnow
from bridge.errors import BridgeError, error_response
from bridge.hooks import ADAPTERS
from bridge.hooks.base import BillingEvent, Ignored, PayloadError
from bridge.hooks.signature import SignatureError, verify
from bridge.mailserver import MailServerError
from bridge.mappings import resolve
from bridge.models import Event, EventStatus, Service
from bridge.passwords import check_and_hash
from bridge.provisioning.jobs import log_event, retry_service, run_inline

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


@dataclasses.dataclass(frozen=True)
class Verified:
    """A request whose signature checked out."""

    settings: Settings
    source: SourceSettings
    body: bytes
    signed_at: int


def verify_request(source: str) -> Verified:
    """Look up the source, read the raw body and check its signature; raise BridgeError."""
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    src = settings.sources.get(source)
    if src is None:
        raise BridgeError("unknown_source", f'no source "{source}" is configured', http_status=404)
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
        raise BridgeError(exc.reason, exc.message, http_status=401) from None
    if request.mimetype != "application/json":
        raise BridgeError(
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
            http_status=415,
        )
    return Verified(settings, src, body, signed_at)


@bp.before_request
def _start_clock() -> None:
    g.hook_started = time.perf_counter()


@bp.after_request
def _measure(response: Response) -> Response:
    """Intake latency and answers per source (unknown names pooled: no label per URL typo)."""
    if request.endpoint == "hooks.receive":
        settings: Settings = current_app.config["BRIDGE_SETTINGS"]
        source = (request.view_args or {}).get("source", "")
        label = source if source in settings.sources else "unknown"
        metrics.HOOK_SECONDS.labels(label).observe(time.perf_counter() - g.hook_started)
        metrics.HOOK_ANSWERS.labels(label, str(response.status_code)).inc()
    return response


@bp.post("/hooks/<source>")
def receive(source: str) -> ResponseReturnValue:
    """Accept one signed lifecycle event from a billing system."""
    verified = verify_request(source)
    settings, src, body, signed_at = (
        verified.settings,
        verified.source,
        verified.body,
        verified.signed_at,
    )
    webhook_id = request.headers["webhook-id"]
    digest = hashlib.sha256(body).hexdigest()
    session = get_session()
    try:
        # Parse and hash before the first query: on SQLite that query takes the write lock,
        # and the password hash is the slowest step of the request.
        parsed, password_hash = _parse_and_hash(src.kind, body, signed_at)
        existing = ledger.find_event(session, source, webhook_id, digest)
        if existing is not None:
            return _redelivered(session, settings, existing)
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
    queued = event.status is EventStatus.QUEUED
    if queued:
        event = _apply_inline(session, settings, event)
    if not queued or event.status is EventStatus.QUEUED:
        # An outcome decided by an inline reconcile was logged there.
        log_event(event.log_fields())
    return answer(event)


def _apply_inline(session: Any, settings: Settings, event: Event) -> Event:
    """Reconcile the event's service within intake.inline_timeout_s; the event, reloaded."""
    if settings.intake.inline_timeout_s <= 0 or event.service_id is None:
        return event
    event_id, service_id = event.id, event.service_id
    session.close()  # no transaction (and on SQLite no write lock) while calling the server
    run_inline(sessions(), current_app.extensions["bridge.mailserver"], settings, service_id)
    return session.get(Event, event_id, populate_existing=True)


def _redelivered(session: Any, settings: Settings, event: Event) -> ResponseReturnValue:
    """A repeat delivery. A billing system re-sending an event that failed (WHMCS's Module
    Queue "Retry") means "try again": the service is reconciled again before answering."""
    if event.status is EventStatus.FAILED and event.service_id is not None:
        retry_service(session, event.service_id, utcnow())
        session.commit()
        event = _apply_inline(session, settings, event)
    return answer(event, duplicate=True)


def _parse_and_hash(
    kind: str, body: bytes, signed_at: int
) -> tuple[BillingEvent | Ignored, str | None]:
    """The normalized event, without its password, and that password's hash."""
    parsed = ADAPTERS[kind].parse(_parse_object(body), signed_at)
    if not isinstance(parsed, BillingEvent) or parsed.password is None:
        return parsed, None
    password_hash = check_and_hash(parsed.password, parsed.password_field)
    return dataclasses.replace(parsed, password=None), password_hash


def _parse_object(body: bytes) -> dict[str, Any]:
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


@bp.post("/hooks/<source>/status")
def status(source: str) -> ResponseReturnValue:
    """Connector self-test (WHMCS TestConnection): signed like a hook; checks the mail server."""
    verified = verify_request(source)
    server = current_app.extensions["bridge.mailserver"]
    client = server.client(deadline=time.monotonic() + 10)
    started = time.monotonic()
    try:
        client.find_domainadmin(verified.settings.mailserver.username)
    except MailServerError as exc:
        return error_response(
            exc.reason,
            f"the bridge is up but cannot use the mail server: {exc.message}",
            503,
        )
    return jsonify(
        {
            "status": "ok",
            "source": source,
            "mailserver": {"reachable": True, "ms": int((time.monotonic() - started) * 1000)},
        }
    )


@bp.post("/hooks/<source>/service")
def service_info(source: str) -> ResponseReturnValue:
    """A service's state and set-up details, for the billing system's client/admin area."""
    verified = verify_request(source)
    data = _parse_object(verified.body)
    ref = data.get("service")
    if not isinstance(ref, (str, int)) or isinstance(ref, bool) or str(ref) == "":
        raise PayloadError({"service": ["the billing service id is required"]})
    session = get_session()
    service = session.scalar(
        select(Service).where(Service.source == source, Service.service_ref == str(ref))
    )
    if service is None:
        return error_response("unknown_service", f"no service {ref} from {source} yet", 404)
    last = session.scalar(
        select(Event).where(Event.service_id == service.id).order_by(Event.id.desc()).limit(1)
    )
    settings = verified.settings
    try:
        bundle: dict[str, Any] | None = resolve(
            settings.mappings, source, service.product_id, service.tier_key, service.addons
        ).bundle.as_dict()
    except BridgeError:
        bundle = None
    return jsonify(
        {
            "service": service.service_ref,
            "username": service.username,
            "domain": service.domain,
            "state": service.desired_state.value if service.desired_state else None,
            "bundle": bundle,
            "in_sync": service.applied_generation >= service.generation
            and service.job_due_at is None,
            "last_event": None
            if last is None
            else {
                "id": last.id,
                "action": last.action,
                "status": last.status.value,
                "reason": last.reason,
                "message": last.message,
            },
            "setup": setup_info(settings, service.username),
        }
    )


def setup_info(settings: Settings, username: str | None) -> dict[str, Any]:
    """Host names, URLs and DNS records a customer needs (from `client_setup:`)."""
    setup = settings.client_setup
    return {
        "username": username,
        "mail_hostname": setup.mail_hostname,
        "webmail_url": setup.webmail_url,
        "admin_url": setup.admin_url,
        "mx": [{"host": host, "priority": prio} for host, prio in setup.mx],
        "backup_mx": list(setup.backup_mx),
        "spf": f"v=spf1 include:{setup.spf_include} -all" if setup.spf_include else None,
    }
