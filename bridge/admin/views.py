"""Console pages: events (list, detail, bulk retry), services, mappings, audit, staff, login."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, ValidationError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Response

from bridge.admin import bp
from bridge.admin.auth import (
    CSRFError,
    admin_required,
    check_csrf,
    client_ip,
    csrf_token,
    current_staff,
    load_staff,
    log_in,
    log_out,
    operator_required,
)
from bridge.admin.chart import build as build_chart
from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.lifecycle import Action, EventStatus
from bridge.mappings.bundles import QuotaBundle, format_quota
from bridge.models import Attempt, Event, Service, StaffRole
from bridge.provisioning.outcome import Outcome
from bridge.support import audit, queries, usage
from bridge.support import staff as staff_accounts
from bridge.support.actions import (
    ActionError,
    Actor,
    NotFoundError,
    bulk_retry,
    link_service,
    preview_link,
    reconcile,
    resolve_event,
    retry_event,
)
from bridge.support.queries import EventFilter, EventFilterSchema, to_filter
from bridge.support.reasons import explain
from bridge.support.staff import LoginRefusedError, authenticate
from bridge.support.state import compare, describe_error
from bridge.web import get_session, runtime

log = logging.getLogger(__name__)
PUBLIC_ENDPOINTS = {"admin.login", "admin.static"}


def _actor() -> Actor:
    staff = current_staff()
    return Actor(staff.email, "web", staff.id, client_ip())


def _page(template: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(f"admin/{template}", **context), status


def _message(title: str, text: str, status: int) -> ResponseReturnValue:
    return _page("message.html", status, title=title, text=text)


# ---- request guards ----------------------------------------------------------------------


@bp.before_request
def guard() -> ResponseReturnValue | None:
    """No secret key, no console; every POST carries a CSRF token; pages need a login."""
    if request.endpoint == "admin.static":
        return None
    if not current_app.secret_key:
        why = current_app.config.get("BRIDGE_SECRET_KEY_REFUSED") or "admin.secret_key is empty"
        log.error("staff console refused: %s", why)
        return _message(
            "The staff console is switched off",
            f"{why} in the bridge's config, so sessions and forms cannot be signed. Set it "
            "to a long random value (e.g. via BRIDGE_SECRET_KEY) and reload the bridge.",
            503,
        )
    if request.method == "POST":
        check_csrf()
    g.staff = load_staff()
    if g.staff is None and request.endpoint not in PUBLIC_ENDPOINTS:
        target = request.full_path if request.method == "GET" else url_for("admin.events")
        return redirect(url_for("admin.login", next=target.rstrip("?")))
    return None


@bp.after_request
def headers(response: Response) -> Response:
    """Pages are private, never framed, and run no script."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> ResponseReturnValue:
    """Errors inside the console are pages, not JSON."""
    if isinstance(exc, CSRFError):
        log.warning("console form refused: %s", exc.why)
        return _message(
            "This form could not be accepted",
            f"{exc.why}. Go back, reload the page and submit it again. (Forms expire, and "
            "only forms shown by this console in this browser session are accepted.)",
            400,
        )
    if exc.code == 403:
        return _message("Not allowed", exc.description or "not allowed", 403)
    if exc.code == 404:
        return _message("Not found", exc.description or "no such page", 404)
    page = make_response(_message(exc.name, exc.description or exc.name, exc.code or 500))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        page.headers["Allow"] = ", ".join(exc.valid_methods)
    return page


@bp.context_processor
def helpers() -> dict[str, Any]:
    """What every template may call."""
    return {
        "csrf_token": csrf_token,
        "staff": g.get("staff"),
        "fmt_time": fmt_time,
        "explain": explain,
        "describe_audit": audit.describe,
        "statuses": [s.value for s in EventStatus],
        "filter_url": filter_url,
    }


def fmt_time(value: datetime | None) -> str:
    """A time for people, in UTC."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def filter_url(endpoint: str, f: EventFilter, **extra: Any) -> str:
    """A URL with the filter in its query string."""
    params = {**f.params(), **{k: v for k, v in extra.items() if v is not None}}
    base = url_for(endpoint)
    return f"{base}?{urlencode(params)}" if params else base


# ---- login -------------------------------------------------------------------------------


class _RefusalLog:
    """One log line per refused login whose password was checked; refusals without a check
    (busy, throttled: a flood) are counted and logged at most once per `every_s`, so a flood
    cannot fill the disk with log lines either."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last = 0.0

    def note(self, email: str, reason: str) -> None:
        if reason == "invalid_login":
            log.warning("console login refused email=%s reason=%s", email, reason)
            return
        with self.lock:
            self.counts[reason] += 1
            now = time.monotonic()
            if now - self.last < self.every_s:
                return
            counts, self.last = dict(self.counts), now
            self.counts.clear()
        log.warning(
            "console logins refused before a password check: %s (the last: email=%s)",
            ", ".join(f"{n} {why}" for why, n in sorted(counts.items())),
            email,
        )


_refusals = _RefusalLog()


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin/") and not target.startswith("//"):
        return target
    return url_for("admin.events")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Staff login: e-mail and password; failures are rate limited per e-mail and address."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.staff is not None:
            return redirect(target)
        return _page("login.html", next=target, email="")
    email = request.form.get("email", "").strip()[:320]
    password = request.form.get("password", "")[:1024]
    try:
        # audits the check's outcome; a throttled or busy try writes nothing
        user = authenticate(runtime(), email, password, client_ip(), utcnow())
    except LoginRefusedError as exc:
        _refusals.note(email, exc.reason)
        page = make_response(
            _page("login.html", exc.http_status, next=target, email=email, error=exc.message)
        )
        retry_after = getattr(exc, "retry_after_s", None)
        if isinstance(retry_after, int):
            page.headers["Retry-After"] = str(retry_after)
        return page
    log_in(user)
    log.info("console login staff=%s", user.email)
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End every session of this person (other browsers too), not only this one."""
    staff_accounts.log_out_everywhere(runtime(), current_staff().id, _actor())
    log_out()
    flash("You are logged out.", "ok")
    return redirect(url_for("admin.login"))


# ---- events ------------------------------------------------------------------------------


def _filter_from(values: Any) -> tuple[EventFilter, dict[str, Any]]:
    data = {k: v for k, v in values.items() if k in EventFilterSchema().fields and v != ""}
    try:
        return to_filter(EventFilterSchema().load(data, unknown=EXCLUDE)), {}
    except ValidationError as exc:
        return EventFilter(), exc.messages if isinstance(exc.messages, dict) else {}


def _cursor(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdecimal() and len(value) < 12 else None


@bp.get("/")
def index() -> ResponseReturnValue:
    """The console starts at the events."""
    return redirect(url_for("admin.events"))


@bp.get("/events")
def events() -> ResponseReturnValue:
    """Events, newest first, filtered and keyset-paginated; counts and the 48-hour chart."""
    f, errors = _filter_from(request.args)
    db = get_session()
    now = utcnow()
    page = queries.list_events(
        db, f, before=_cursor("before"), after=_cursor("after"), limit=queries.DEFAULT_PAGE
    )
    counts = queries.status_counts(db, f)
    settings = runtime().settings
    return _page(
        "events.html",
        f=f,
        errors=errors,
        page=page,
        counts=counts,
        total=sum(counts.values()),
        unresolved=queries.unresolved_failed(db, f),
        chart=build_chart(queries.hourly(db, now)),
        sources=sorted(settings.sources),
        actions=[a.value for a in Action],
        form=request.args,
    )


def _event_or_404(event_id: int) -> Event:
    event = get_session().get(Event, event_id)
    if event is None:
        raise NotFound(f"there is no event {event_id}")
    return event


@bp.get("/events/<int:event_id>")
def event(event_id: int) -> ResponseReturnValue:
    """One event: why, payload, attempts, desired vs actual, audit; Retry and Mark resolved."""
    ev = _event_or_404(event_id)
    comparison = None
    if ev.service_id is not None:
        comparison = compare(runtime(), ev.service_id, fresh=False)
    db = get_session()
    attempts = queries.attempts_for(db, ev, 20)
    return _page(
        "event.html",
        ev=ev,
        service=ev.service,
        comparison=comparison,
        describe_error=describe_error,
        attempts=attempts,
        last_change=_last_change(attempts),
        payload=json.dumps(ev.payload, indent=2, sort_keys=True, ensure_ascii=False),
        audit_entries=audit.for_event(db, ev.id, ev.service_id),
    )


def _flash_outcome(outcome: Outcome | None, queued: int) -> None:
    if outcome is None:
        flash(f"Queued: {queued} failed event(s) will be retried by the worker.", "ok")
    elif outcome.status == "applied":
        flash("Retried: the mail server now matches the billing system.", "ok")
    elif outcome.status == "busy":
        flash(f"Queued; another process is reconciling this service ({outcome.message}).", "ok")
    elif outcome.status == "retry":
        flash(
            f"Retried, but the mail server did not answer ({outcome.reason}: {outcome.message}); "
            "the worker tries again on its schedule.",
            "error",
        )
    else:
        flash(f"Retried, and it failed again: {outcome.reason}: {outcome.message}", "error")


@bp.post("/events/<int:event_id>/retry")
@operator_required
def retry(event_id: int) -> ResponseReturnValue:
    """Reconcile the event's service again, now."""
    try:
        result = retry_event(
            runtime(),
            event_id,
            _actor(),
        )
    except NotFoundError as exc:
        raise NotFound(exc.message) from None
    except ActionError as exc:
        flash(exc.message, "error")
    else:
        _flash_outcome(result.outcome, result.requeued)
    return redirect(url_for("admin.event", event_id=event_id))


@bp.post("/events/<int:event_id>/resolve")
@operator_required
def resolve(event_id: int) -> ResponseReturnValue:
    """Mark a failed event as handled; it stays failed, with who and when."""
    try:
        resolve_event(runtime(), event_id, _actor(), request.form.get("note"))
    except NotFoundError as exc:
        raise NotFound(exc.message) from None
    except ActionError as exc:
        flash(exc.message, "error")
    else:
        flash("Marked resolved.", "ok")
    return redirect(url_for("admin.event", event_id=event_id))


@bp.get("/events/retry")
@operator_required
def bulk_retry_confirm() -> ResponseReturnValue:
    """Show how many services a bulk retry of this filter would reconcile."""
    f, errors = _filter_from(request.args)
    if errors:
        flash("The filter is not valid; fix it first.", "error")
        return redirect(url_for("admin.events"))
    services, count = queries.retry_targets(get_session(), f)
    criteria = {k: v for k, v in f.params().items() if k != "status"}
    return _page("bulk_retry.html", f=f, criteria=criteria, services=len(services), events=count)


@bp.post("/events/retry")
@operator_required
def bulk_retry_run() -> ResponseReturnValue:
    """Queue every service with unresolved failed events matching the filter."""
    f, errors = _filter_from(request.form)
    if errors:
        flash("The filter is not valid; nothing was retried.", "error")
        return redirect(url_for("admin.events"))
    result = bulk_retry(runtime(), f, _actor())
    rate = runtime().settings.mailserver.rate_limit_per_s
    flash(
        f"Queued {result.services} service(s) ({result.events} failed event(s)) for a "
        f"reconcile; the worker applies them at the mail server's rate limit ({rate:g} calls/s).",
        "ok",
    )
    return redirect(filter_url("admin.events", f))


# ---- services ----------------------------------------------------------------------------


def _last_change(attempts: list[Attempt]) -> datetime | None:
    """When the newest reconcile that wrote to the mail server ended (None: none did)."""
    for attempt in attempts:  # newest first
        wrote = any(
            c.get("method") != "GET" and c.get("path") != "/api/v1/auth/" for c in attempt.calls
        )
        if wrote and attempt.finished_at is not None:
            return attempt.finished_at
    return None


@bp.get("/services/<int:service_id>")
def service(service_id: int) -> ResponseReturnValue:
    """One service: desired state, bundle, desired vs actual, events, attempts, audit."""
    db = get_session()
    svc = db.get(Service, service_id)
    if svc is None:
        raise NotFound(f"there is no service {service_id}")
    comparison = compare(runtime(), service_id, fresh=False)
    figures = usage.of_service(db, service_id)
    events = list(
        db.scalars(
            select(Event).where(Event.service_id == service_id).order_by(Event.id.desc()).limit(200)
        )
    )
    attempts = list(
        db.scalars(
            select(Attempt)
            .where(Attempt.service_id == service_id)
            .order_by(Attempt.id.desc())
            .limit(20)
        )
    )
    return _page(
        "service.html",
        svc=svc,
        comparison=comparison,
        describe_error=describe_error,
        events=list(reversed(events)),
        attempts=attempts,
        last_change=_last_change(attempts),
        audit_entries=audit.for_service(db, service_id),
        format_quota=format_quota,
        bundle_fields=QuotaBundle.field_names(),
        usage=figures,
        storage_percent=usage.storage_percent(figures) if figures else None,
        refresh_h=f"{runtime().settings.usage.refresh_h:g}",
    )


@bp.post("/services/<int:service_id>/refresh")
def refresh_service(service_id: int) -> ResponseReturnValue:
    """Read the service's DomainAdmin again, now, from the staff share of the rate budget;
    the pages show this read (and its time) until the next refresh."""
    if get_session().get(Service, service_id) is None:
        raise NotFound(f"there is no service {service_id}")
    comparison = compare(runtime(), service_id, fresh=True, who=current_staff().email)
    if comparison.read_error is not None:
        error = describe_error(comparison.read_error)
        flash(f"Not refreshed: {error['reason']}: {error['message']}", "error")
    elif comparison.read:
        flash("Refreshed: the account as the mail server shows it now.", "ok")
    back = request.form.get("event", "")
    if back.isdecimal() and len(back) < 12:
        return redirect(url_for("admin.event", event_id=int(back)))
    return redirect(url_for("admin.service", service_id=service_id))


@bp.post("/services/<int:service_id>/reconcile")
@operator_required
def reconcile_service(service_id: int) -> ResponseReturnValue:
    """Reconcile now, whether or not its job is due."""
    try:
        outcome = reconcile(runtime(), service_id, _actor())
    except NotFoundError as exc:
        raise NotFound(exc.message) from None
    if outcome.status == "applied":
        flash(f"Reconciled: {outcome.write_calls} change(s) made on the mail server.", "ok")
    else:
        flash(f"Reconcile {outcome.status}: {outcome.reason}: {outcome.message}", "error")
    return redirect(url_for("admin.service", service_id=service_id))


@bp.get("/services/<int:service_id>/link")
@operator_required
def link_confirm(service_id: int) -> ResponseReturnValue:
    """Show the account (recovery e-mail, domains) before binding the service to it."""
    try:
        preview = preview_link(runtime(), service_id, request.args.get("username", ""))
    except NotFoundError as exc:
        raise NotFound(exc.message) from None
    except BridgeError as exc:
        flash(f"{exc.reason}: {exc.message}", "error")
        return redirect(url_for("admin.service", service_id=service_id))
    return _page("link.html", preview=preview, relink=preview.bound_to is not None)


@bp.post("/services/<int:service_id>/link")
@operator_required
def link(service_id: int) -> ResponseReturnValue:
    """Bind (or rebind) the service to the account shown on the confirmation page."""
    username = request.form.get("username", "")
    try:
        relink = request.form.get("relink") == "1"  # what the confirmation page showed
        preview = link_service(runtime(), service_id, username, _actor(), relink=relink)
    except NotFoundError as exc:
        raise NotFound(exc.message) from None
    except BridgeError as exc:
        flash(f"{exc.reason}: {exc.message}", "error")
    else:
        flash(
            f"Linked to {preview.username}. Press Retry on a failed event to apply what waits.",
            "ok",
        )
    return redirect(url_for("admin.service", service_id=service_id))


# ---- mappings and audit ------------------------------------------------------------------


@bp.get("/mappings")
def mappings() -> ResponseReturnValue:
    """Tiers, products and add-ons as configured; products events are waiting on."""
    from bridge.mappings import resolve

    m = runtime().settings.mappings
    products = []
    for source, table in sorted(m.products.items()):
        for pid, tier in table.items():
            products.append((source, pid, tier, resolve(m, source, pid).bundle))
    unmapped = [
        (u, str(u.product_id) in m.products.get(u.source, {}))
        for u in queries.unmapped_products(get_session())
    ]
    return _page(
        "mappings.html",
        tiers=sorted(m.tiers.items()),
        products=products,
        addons=[(s, n, b) for s, t in sorted(m.addons.items()) for n, b in t.items()],
        unmapped=unmapped,
        bundle_fields=QuotaBundle.field_names(),
        format_quota=format_quota,
        config_path=runtime().settings.path,
        loaded_at=runtime().settings.loaded_at,
    )


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    """The newest audit entries: logins, retries, resolutions, reconciles."""
    before = _cursor("before")
    entries = audit.recent(get_session(), before=before, limit=100)
    older = entries[-1].id if len(entries) == 100 else None
    return _page("audit.html", entries=entries, older=older)


# ---- staff accounts (admins) -------------------------------------------------------------


@bp.get("/staff")
@admin_required
def staff_list() -> ResponseReturnValue:
    """Staff members, their roles, state and tokens; add, disable, enable, change, remove."""
    rows = staff_accounts.list_staff(get_session())
    return _page("staff.html", rows=rows, roles=[r.value for r in StaffRole])


def _staff_done(message: str) -> ResponseReturnValue:
    flash(message, "ok")
    return redirect(url_for("admin.staff_list"))


def _new_password() -> str:
    password = request.form.get("password", "")[:1024]
    if password != request.form.get("password_again", ""):
        raise staff_accounts.StaffError("password_mismatch", "the two passwords differ")
    return password


@bp.post("/staff")
@admin_required
def staff_add() -> ResponseReturnValue:
    """Add a staff member with the password the admin typed (twice)."""
    try:
        role = StaffRole(request.form.get("role", ""))
        password = _new_password()
        with runtime().transaction() as db:
            now = utcnow()
            user = staff_accounts.add_staff(db, request.form.get("email", ""), password, role, now)
            _actor().audit(db, "staff_added", now, email=user.email, role=role.value)
    except ValueError:
        flash("Choose a role.", "error")
    except BridgeError as exc:
        flash(f"{exc.reason}: {exc.message}", "error")
    else:
        return _staff_done(f"Added {role.value} {user.email}.")
    return redirect(url_for("admin.staff_list"))


@bp.post("/staff/<int:staff_id>/<change>")
@admin_required
def staff_change(staff_id: int, change: str) -> ResponseReturnValue:
    """Disable, enable, change the role of, reset the password of, or remove a staff member.
    Every change but enable ends all of that person's sessions; each one is audited."""
    rt, actor = runtime(), _actor()
    try:
        if change == "disable":
            user = staff_accounts.disable_staff(rt, staff_id, actor)
            done = f"Disabled {user.email}: logged out everywhere, API tokens revoked."
        elif change == "enable":
            user = staff_accounts.enable_staff(rt, staff_id, actor)
            done = f"Enabled {user.email}; old API tokens stay revoked."
        elif change == "role":
            try:
                role = StaffRole(request.form.get("role", ""))
            except ValueError:
                raise staff_accounts.StaffError("invalid_role", "choose a role") from None
            user = staff_accounts.set_role(rt, staff_id, role, actor)
            done = f"{user.email} is now {role.value}, and logged out everywhere."
        elif change == "password":
            user = staff_accounts.reset_password(rt, staff_id, _new_password(), actor)
            done = f"New password set for {user.email}; their sessions ended."
        elif change == "remove":
            if request.form.get("confirm") != "yes":
                raise staff_accounts.StaffError("not_confirmed", "tick the box to confirm")
            done = f"Removed {staff_accounts.remove_staff(rt, staff_id, actor)}."
        else:
            raise NotFound(f"there is no staff change {change!r}")
    except BridgeError as exc:
        flash(f"{exc.reason}: {exc.message}", "error")
        return redirect(url_for("admin.staff_list"))
    return _staff_done(done)
