"""POST /hooks/<source>: check the signature on the raw bytes, hand the body to the intake,
render its receipt (docs/design.md#answers). The connector endpoints live here too."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from bridge import intake, metrics
from bridge.adapters.base import billing_id, check_value
from bridge.config import Settings, SourceSettings
from bridge.errors import BridgeError
from bridge.intake import Receipt
from bridge.lifecycle import EventStatus, PayloadError
from bridge.mailserver import MailServerError
from bridge.mappings import resolve
from bridge.models import Event, Service
from bridge.signature import SignatureError, verify
from bridge.support import usage
from bridge.web import error_response, get_session, runtime

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)


def answer(receipt: Receipt) -> ResponseReturnValue:
    """The billing system's answer for a stored event (docs/design.md#answers)."""
    body: dict[str, Any] = {"event_id": receipt.event_id, "status": receipt.status.value}
    if receipt.service_ref is not None:
        body["service"] = receipt.service_ref
    if receipt.reason:
        body["reason"] = receipt.reason
    if receipt.message:
        body["message"] = receipt.message
    if receipt.next_attempt_at is not None:
        body["next_attempt_at"] = receipt.next_attempt_at.isoformat()
    if receipt.duplicate:
        body["duplicate"] = True
    status = 202 if receipt.status in (EventStatus.QUEUED, EventStatus.RECEIVED) else 200
    return jsonify(body), status


@dataclasses.dataclass(frozen=True)
class Verified:
    """A request whose signature checked out."""

    settings: Settings
    source: SourceSettings
    body: bytes
    signed_at: int


def verify_request(source: str) -> Verified:
    """Look up the source, read the raw body and check its signature; raise BridgeError.

    A GET is signed the same way over its (empty) body and needs no content type.
    """
    settings = runtime().settings
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
    if request.method != "GET" and request.mimetype != "application/json":
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
        settings = runtime().settings
        source = (request.view_args or {}).get("source", "")
        label = source if source in settings.sources else "unknown"
        metrics.HOOK_SECONDS.labels(label).observe(time.perf_counter() - g.hook_started)
        metrics.HOOK_ANSWERS.labels(label, str(response.status_code)).inc()
    return response


@bp.post("/hooks/<source>")
def receive(source: str) -> ResponseReturnValue:
    """Accept one signed lifecycle event from a billing system."""
    verified = verify_request(source)
    webhook_id = request.headers["webhook-id"]
    return answer(intake.accept(runtime(), source, webhook_id, verified.body, verified.signed_at))


@bp.post("/hooks/<source>/status")
def status(source: str) -> ResponseReturnValue:
    """Connector self-test (WHMCS TestConnection): signed like a hook; checks the mail server."""
    verified = verify_request(source)
    client = runtime().mailserver.client(deadline=time.monotonic() + 10)
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
    data = intake.parse_object(verified.body)
    if data.get("service") in (None, ""):
        raise PayloadError({"service": ["the billing service id is required"]})
    ref = str(check_value(billing_id(), data["service"], "service"))
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
            "product": service.product_id,
            "addons": service.addons or {},
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


@bp.get("/hooks/<source>/tiers")
def tiers(source: str) -> ResponseReturnValue:
    """The configured tiers and this source's add-ons, for the billing module's set-up."""
    mappings = verify_request(source).settings.mappings
    return jsonify(
        {
            "tiers": [
                {"key": key, "label": key, "bundle": bundle.as_dict()}
                for key, bundle in mappings.tiers.items()
            ],
            "addons": [
                {"key": key, "label": key, "adds": increment.as_dict()}
                for key, increment in mappings.addons.get(source, {}).items()
            ],
            "products": dict(mappings.products.get(source, {})),
        }
    )


@bp.get("/hooks/<source>/usage")
def usage_page(source: str) -> ResponseReturnValue:
    """A page of this source's services with their last usage figures (`?after=&limit=`)."""
    verified = verify_request(source)
    after, limit = usage.page_query(request.args.to_dict(flat=True))
    return jsonify(
        usage.connector_page(get_session(), verified.settings.mappings, source, after, limit)
    )
