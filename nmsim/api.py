"""The NMS API v1 routes (nmsim/README.md#api-routes), every path with its trailing slash."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import NotFound

from nmsim.faults import json_response
from nmsim.model import Account, ApiError, invalid
from nmsim.security import Token, verify_password
from nmsim.sim import Simulator

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def sim() -> Simulator:
    """Return the simulator of the current app."""
    return current_app.extensions["nmsim"]  # type: ignore[no-any-return]


def no_content() -> Response:
    """Return the documented 204: empty body, Content-Type text/html."""
    return Response("", status=204, content_type="text/html")


def _ok(body: Any, status: int = 200) -> Response:
    return json_response(body, status)


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise invalid("a JSON object body is required")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise invalid("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


def _caller(s: Simulator) -> Account:
    """Authenticate `Authorization: Basic base64(username:token)`; call with the lock held."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username or not auth.password:
        raise ApiError(401, "unauthorized", "Basic authentication with username and token required")
    username = s.state.fold(auth.username)
    if not s.state.tokens.check(username, auth.password, s.clock.now()):
        raise ApiError(401, "invalid_token", "the auth token is unknown or expired")
    acct = s.state.accounts.get(username)
    if acct is None:
        raise ApiError(401, "invalid_token", "the auth token is unknown or expired")
    if not acct.enabled or not acct.api_access:
        raise ApiError(401, "account_disabled", "the account is disabled or has no API access")
    g.auth_user = acct.username
    return acct


def new_token(s: Simulator, username: str) -> tuple[str, Token]:
    """Issue a token; profile single-token first revokes the user's earlier ones."""
    if s.config.single_token:
        s.state.tokens.drop_user(username)
    return s.state.tokens.issue(username, s.clock.now(), s.config.token_ttl)


def _login_failed(message: str) -> ApiError:
    return ApiError(
        401, "login_failed", message, {"auth": {"status": "failed", "message": message}}
    )


@bp.post("/auth/")
def login() -> Response:
    """POST /api/v1/auth/: exchange username + password (+ otp) for a token."""
    s = sim()
    body = _body()
    unknown = sorted(set(body) - {"username", "password", "otp"})
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(unknown)}")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise invalid("username and password must be strings")
    with s.lock:
        username = s.state.fold(username)
        acct = s.state.accounts.get(username)
        stored = acct.password_hash if acct else None
    # Verifying a hash can be slow (client-chosen rounds): do it outside the lock.
    ok = stored is not None and verify_password(password, stored)
    with s.lock:
        acct = s.state.accounts.get(username)
        if not ok or acct is None or acct.password_hash != stored:
            raise _login_failed("invalid username or password")
        if not acct.enabled:
            raise _login_failed("the account is disabled")
        if not acct.api_access:
            raise _login_failed("API access is disabled for this account")
        if acct.otp is not None and body.get("otp") != acct.otp:
            raise _login_failed("a valid one-time code (otp) is required")
        now = s.clock.now()
        value, token = new_token(s, username)
        acct.last_login = int(now)
        g.auth_user = username
        auth = {
            "username": username,
            "status": "success",
            "message": f"{username} successfully logged in",
            "auth_token": value,
            "perm_level": acct.perm_level,
            "valid_from": token.valid_from,
            "valid_to": token.valid_to,
        }
    return _ok({"auth": auth})


# ----- accounts ------------------------------------------------------------------------------


@bp.get("/accounts/")
def list_accounts() -> Response:
    """GET /api/v1/accounts/."""
    s = sim()
    with s.lock:
        page = s.state.list_accounts(_caller(s), request.args)
        status = s.config.empty_search_status
    if page["accounts"] or status == 200:
        return _ok(page)
    if status == 204:  # profile empty-204
        return no_content()
    raise ApiError(404, "not_found", "no account matches")  # profile empty-404


@bp.post("/accounts/")
def create_account() -> Response:
    """POST /api/v1/accounts/ (MasterAdmin, DomainAdmin or MailUser by perm_level)."""
    s = sim()
    with s.lock:
        caller = _caller(s)
        return _ok(s.state.create_account(caller, _body()), s.config.create_status)


@bp.get("/accounts/<username>/")
def get_account(username: str) -> Response:
    """GET /api/v1/accounts/<username>/."""
    s = sim()
    with s.lock:
        return _ok(s.state.get_account(_caller(s), username))


@bp.patch("/accounts/<username>/")
def patch_account(username: str) -> Response:
    """PATCH /api/v1/accounts/<username>/."""
    s = sim()
    with s.lock:
        caller = _caller(s)
        return _ok(s.state.patch_account(caller, username, _body()))


@bp.delete("/accounts/<username>/")
def delete_account(username: str) -> Response:
    """DELETE /api/v1/accounts/<username>/."""
    s = sim()
    with s.lock:
        s.state.delete_account(_caller(s), username)
    return no_content()


@bp.patch("/accounts/cascade/domainadmin/<username>/<action>/")
def cascade_enable(username: str, action: str) -> Response:
    """PATCH .../cascade/domainadmin/<username>/<enable|disable>/; any body is ignored."""
    s = sim()
    with s.lock:
        caller = _caller(s)
        if action not in ("enable", "disable"):
            raise ApiError(404, "not_found", "action must be enable or disable")
        s.state.cascade_set_enabled(caller, username, 1 if action == "enable" else 0)
    return no_content()


@bp.delete("/accounts/cascade/domainadmin/<username>/")
def cascade_delete(username: str) -> Response:
    """DELETE .../cascade/domainadmin/<username>/; any body is ignored."""
    s = sim()
    if not s.config.cascade_delete_route:  # profile no-cascade: as if the route did not exist
        g.route_hidden = True
        raise NotFound()
    with s.lock:
        s.state.cascade_delete(_caller(s), username)
    return no_content()


@bp.post("/accounts/cascade/ownership/domainadmin/<username>/")
def transfer(username: str) -> Response:
    """POST .../cascade/ownership/domainadmin/<username>/; any body is ignored."""
    s = sim()
    with s.lock:
        s.state.transfer(_caller(s), username)
    return no_content()


# ----- domains, relay domains, domain aliases ------------------------------------------------


def _zone_routes(path: str, kind: str) -> None:
    def create() -> Response:
        s = sim()
        with s.lock:
            caller = _caller(s)
            return _ok(s.state.create_zone(caller, kind, _body()), s.config.create_status)

    def listing() -> Response:
        s = sim()
        with s.lock:
            return _ok(s.state.list_zones(_caller(s), kind))

    def delete() -> Response:
        s = sim()
        with s.lock:
            caller = _caller(s)
            s.state.delete_zone(caller, kind, _body())
        return no_content()

    bp.add_url_rule(path, f"create_{kind}", create, methods=["POST"])
    bp.add_url_rule(path, f"list_{kind}", listing, methods=["GET"])
    bp.add_url_rule(path, f"delete_{kind}", delete, methods=["DELETE"])


_zone_routes("/domains/", "domain")
_zone_routes("/relaydomains/", "relay")
_zone_routes("/domainaliases/", "alias")


# ----- aliases and sender addresses ------------------------------------------------------------


def _forwarder_routes(path: str, kind: str) -> None:
    def create() -> Response:
        s = sim()
        with s.lock:
            caller = _caller(s)
            return _ok(s.state.create_forwarder(caller, kind, _body()), s.config.create_status)

    def replace() -> Response:
        s = sim()
        with s.lock:
            caller = _caller(s)
            return _ok(s.state.put_forwarder(caller, kind, _body()))

    def listing() -> Response:
        s = sim()
        with s.lock:
            return _ok(s.state.list_forwarders(_caller(s), kind, request.args))

    def delete() -> Response:
        s = sim()
        with s.lock:
            caller = _caller(s)
            s.state.delete_forwarder(caller, kind, _body())
        return no_content()

    bp.add_url_rule(path, f"create_{kind}_fwd", create, methods=["POST"])
    bp.add_url_rule(path, f"put_{kind}_fwd", replace, methods=["PUT"])
    bp.add_url_rule(path, f"list_{kind}_fwd", listing, methods=["GET"])
    bp.add_url_rule(path, f"delete_{kind}_fwd", delete, methods=["DELETE"])


_forwarder_routes("/aliases/", "alias")
_forwarder_routes("/sender_addresses/", "sender")


# ----- statistics ------------------------------------------------------------------------------


@bp.get("/stats/quota/")
def quota_stats() -> Response:
    """GET /api/v1/stats/quota/: a top-level JSON array."""
    s = sim()
    with s.lock:
        return _ok(s.state.quota_stats(_caller(s), request.args))


@bp.get("/stats/mail/")
def mail_stats() -> Response:
    """GET /api/v1/stats/mail/."""
    s = sim()
    with s.lock:
        return _ok(s.state.mail_stats(_caller(s)))
