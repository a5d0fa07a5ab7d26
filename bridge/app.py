"""The application factory: config, logging, runtime, blueprints, error handlers."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge import web
from bridge.config import Settings, load_config
from bridge.logging import configure_logging
from bridge.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Flask:
    """Build the bridge; settings come from BRIDGE_CONFIG unless given (tests pass them)."""
    settings = settings or load_config()
    if configure_logs:
        configure_logging(settings.logging.level, settings.logging.json)
    app = Flask("bridge")
    # An empty or placeholder key switches the console off (it says why at /admin/login).
    refusal = settings.admin.secret_key_refusal()
    if refusal is not None and settings.admin.secret_key:
        log.error("staff console switched off: %s; set BRIDGE_SECRET_KEY", refusal)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.intake.max_body_bytes,
        SECRET_KEY=None if refusal else settings.admin.secret_key,
        BRIDGE_SECRET_KEY_REFUSED=refusal,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_SECURE=settings.admin.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    if settings.admin.trusted_proxies:
        # Behind nginx: take the client address from X-Forwarded-For (login rate limits).
        n = settings.admin.trusted_proxies
        # Flask documents wrapping wsgi_app this way; mypy sees a method being replaced.
        proxied = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
        app.wsgi_app = proxied  # type: ignore[method-assign]
    web.init_app(app, Runtime.build(settings))
    web.register_error_handlers(app)
    web.register_headers(app, hsts=settings.admin.secure_cookies)

    from bridge.admin import bp as admin_bp
    from bridge.api import bp as api_bp
    from bridge.hooks.views import bp as hooks_bp
    from bridge.ops import bp as ops_bp

    for blueprint in (hooks_bp, admin_bp, api_bp, ops_bp):
        app.register_blueprint(blueprint)
    return app
