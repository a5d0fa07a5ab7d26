"""The application factory: config, logging, runtime, blueprints, error handlers.

A server shows one or both of the bridge's two faces:

- `hooks`: the billing systems' webhooks and connector endpoints, and the health and metrics
  endpoints (`/hooks/...`, `/healthz`, `/readyz`, `/metrics`);
- `staff`: the support console and the staff API (`/admin/...`, `/api/...`); a staff server
  answers the health and metrics endpoints too, about itself.

`all` (the default, what `make run` serves) answers both from one server and builds the staff
face on the first request under `/admin` or `/api`: a server that only takes webhooks never
loads the console, the API and their libraries. The deployed layout (deploy/: mailbridge-web
and mailbridge-staff) runs each face in its own gunicorn, the staff one at a lower CPU
priority, so that nothing a person or a flood does to the console can slow the webhooks down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from flask import Blueprint, Flask
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge import web
from bridge.config import Settings, load_config
from bridge.logging import configure_logging
from bridge.runtime import Runtime

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

Faces = Literal["all", "hooks", "staff"]
FACES: tuple[Faces, ...] = ("all", "hooks", "staff")
#: Where the staff face lives; everything else is the hooks face.
STAFF_PREFIXES = ("/admin", "/api")


def create_app(
    settings: Settings | None = None, *, configure_logs: bool = True, faces: Faces = "all"
) -> Flask:
    """Build the bridge; settings come from BRIDGE_CONFIG unless given (tests pass them)."""
    if faces not in FACES:
        raise ValueError(f"faces must be one of {', '.join(FACES)}, not {faces!r}")
    settings = settings or load_config()
    if configure_logs:
        configure_logging(settings.logging.level, settings.logging.json)
    # An empty or placeholder key switches the console off (it says why at /admin/login).
    refusal = settings.admin.secret_key_refusal()
    if refusal is not None and settings.admin.secret_key and faces != "hooks":
        log.error("staff console switched off: %s; set BRIDGE_SECRET_KEY", refusal)
    box = web.RuntimeBox(Runtime.build(settings))
    if faces == "staff":
        app = _face(settings, box, _staff_blueprints())
        served: WSGIApplication = app.wsgi_app
    else:
        app = _face(settings, box, _hooks_blueprints())
        app.session_interface = _NoSessions()  # webhooks carry no cookies
        if faces == "all":
            served = _StaffOnFirstUse(
                app.wsgi_app, lambda: _face(settings, box, _staff_blueprints())
            )
            app.extensions["bridge.staff"] = served
        else:
            web.refuse_prefixes(app, STAFF_PREFIXES)
            served = app.wsgi_app
    if settings.admin.trusted_proxies:
        # Behind nginx: take the client address from X-Forwarded-For (login rate limits).
        n = settings.admin.trusted_proxies
        served = ProxyFix(served, x_for=n, x_proto=n, x_host=n)
    # Flask documents wrapping wsgi_app this way; mypy sees a method being replaced.
    app.wsgi_app = served  # type: ignore[method-assign,assignment]
    return app


def staff_app(app: Flask) -> Flask:
    """The Flask app serving `/admin` and `/api` for the server `app` (built if need be)."""
    lazy = app.extensions.get("bridge.staff")
    return lazy.app() if isinstance(lazy, _StaffOnFirstUse) else app


def _face(settings: Settings, box: web.RuntimeBox, blueprints: Iterable[Blueprint]) -> Flask:
    app = Flask("bridge")
    refusal = settings.admin.secret_key_refusal()
    app.config.update(
        MAX_CONTENT_LENGTH=settings.intake.max_body_bytes,
        SECRET_KEY=None if refusal else settings.admin.secret_key,
        BRIDGE_SECRET_KEY_REFUSED=refusal,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_SECURE=settings.admin.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    web.init_app(app, box)
    web.register_error_handlers(app)
    web.register_headers(app, hsts=settings.admin.secure_cookies)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


def _hooks_blueprints() -> list[Blueprint]:
    from bridge.hooks.views import bp as hooks_bp
    from bridge.ops import bp as ops_bp

    return [hooks_bp, ops_bp]


def _staff_blueprints() -> list[Blueprint]:
    from bridge.admin import bp as admin_bp
    from bridge.api import bp as api_bp
    from bridge.ops import bp as ops_bp

    return [admin_bp, api_bp, ops_bp]


def is_staff_path(path: str) -> bool:
    """Whether a request path belongs to the staff face (`/admin`, `/api/openapi.json`...)."""
    return any(path == p or path.startswith(p + "/") for p in STAFF_PREFIXES)


class _StaffOnFirstUse:
    """WSGI: staff paths go to the staff app, built by the first request that needs it;
    the rest to the hooks app."""

    def __init__(self, hooks: WSGIApplication, build: Callable[[], Flask]) -> None:
        self._hooks = hooks
        self._build = build
        self._staff: Flask | None = None
        self._lock = threading.Lock()

    def app(self) -> Flask:
        if self._staff is None:
            with self._lock:
                if self._staff is None:
                    self._staff = self._build()
        return self._staff

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if is_staff_path(environ.get("PATH_INFO", "")):
            return self.app().wsgi_app(environ, start_response)
        return self._hooks(environ, start_response)


class _NoSessions(SessionInterface):
    """No cookie session: the hooks face never reads nor sets one."""

    def open_session(self, app: Flask, request: Any) -> SessionMixin | None:
        return None  # Flask then uses its null session

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        return None
