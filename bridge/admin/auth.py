"""Console sessions (Flask's signed cookie), CSRF tokens (itsdangerous) and roles."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.exceptions import BadRequest, Forbidden

from bridge.models import StaffUser
from bridge.web import get_session

CSRF_SALT = "mailbridge.admin.csrf"
CSRF_MAX_AGE_S = 4 * 3600
#: A console login lasts at most this long, whatever the browser does with the cookie.
SESSION_MAX_AGE_S = 12 * 3600

F = TypeVar("F", bound=Callable[..., Any])


class CSRFError(BadRequest):
    """A form POST without a valid token from this session."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt=CSRF_SALT)


def _session_nonce() -> str:
    nonce = session.get("csrf")
    if not isinstance(nonce, str) or not nonce:
        nonce = secrets.token_urlsafe(18)
        session["csrf"] = nonce
    return nonce


def csrf_token() -> str:
    """A fresh token for one form, bound to this browser session."""
    return _serializer().dumps(_session_nonce())


def check_csrf() -> None:
    """Refuse a POST whose csrf_token is missing, forged, from another session or too old."""
    token = request.form.get("csrf_token", "")
    if not token:
        raise CSRFError("the form carried no CSRF token")
    try:
        nonce = _serializer().loads(token, max_age=CSRF_MAX_AGE_S)
    except SignatureExpired:
        raise CSRFError("the form is too old (more than 4 hours)") from None
    except BadSignature:
        raise CSRFError("the CSRF token of the form is not valid") from None
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(str(nonce), expected):
        raise CSRFError("the form belongs to another session") from None


def log_in(user: StaffUser) -> None:
    """Start a fresh session for this staff member (new CSRF nonce: no fixation).

    The cookie carries the person's session generation; logout, disable, a role change and
    a password reset raise it in the database, which ends every session of theirs at once.
    """
    session.clear()
    session["staff_id"] = user.id
    session["gen"] = user.session_generation
    session["login_at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(18)


def log_out() -> None:
    """Forget the session."""
    session.clear()


def load_staff() -> StaffUser | None:
    """The logged-in staff member of this request, or None (an expired session is cleared)."""
    staff_id = session.get("staff_id")
    if not isinstance(staff_id, int):
        return None
    login_at = session.get("login_at")
    if not isinstance(login_at, int) or time.time() - login_at > SESSION_MAX_AGE_S:
        session.pop("staff_id", None)
        return None
    user = get_session().get(StaffUser, staff_id)
    if (
        user is None
        or user.disabled_at is not None
        or session.get("gen") != user.session_generation
    ):
        session.pop("staff_id", None)
        return None
    return user


def current_staff() -> StaffUser:
    """The staff member of a view that requires a login."""
    return cast(StaffUser, g.staff)


def operator_required(view: F) -> F:
    """Only operators may run this view."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_staff().can_operate:
            raise Forbidden(
                f"your role ({current_staff().role.value}) can look but not change anything; "
                "ask an operator"
            )
        return view(*args, **kwargs)

    return cast(F, wrapper)


def admin_required(view: F) -> F:
    """Only admins may run this view (staff accounts)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_staff().is_admin:
            raise Forbidden(
                f"your role ({current_staff().role.value}) cannot manage staff accounts; "
                "ask an admin"
            )
        return view(*args, **kwargs)

    return cast(F, wrapper)


def client_ip() -> str:
    """The client's address as this process sees it."""
    return request.remote_addr or "unknown"
