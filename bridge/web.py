"""Flask glue shared by the web faces (hooks, console, API, ops): the runtime of this app,
the request's read session, the write transaction, and the one JSON error shape."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from flask import Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.runtime import Runtime

log = logging.getLogger(__name__)


def init_app(app: Flask, rt: Runtime) -> None:
    """Attach the runtime; the request's read session closes at teardown."""
    app.extensions["bridge.runtime"] = rt
    app.teardown_request(_close_session)


def runtime(app: Flask | None = None) -> Runtime:
    """This app's runtime (the current app's when none is given)."""
    return cast(Runtime, (app or current_app).extensions["bridge.runtime"])


def use_settings(app: Flask, settings: Settings) -> None:
    """Serve new settings from now on (a config reload); the database and client stay."""
    app.extensions["bridge.runtime"] = runtime(app).with_settings(settings)


def get_session() -> Session:
    """The request's read session: autocommit, holds no lock, sees the newest rows.

    Views write only inside `transaction()`, the one place a request commits.
    """
    if "db_session" not in g:
        g.db_session = runtime().reads()
    return cast(Session, g.db_session)


@contextmanager
def transaction() -> Iterator[Session]:
    """A short write transaction for a view: commit on success, roll back on error."""
    with runtime().transaction() as session:
        yield session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def error_response(reason: str, message: str, status: int, **extra: Any) -> ResponseReturnValue:
    """Render the shared error shape."""
    return jsonify({"error": reason, "message": message, **extra}), status


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_").replace("'", "")


def register_error_handlers(app: Flask) -> None:
    """Every error a client can see goes through one of these three handlers."""

    @app.errorhandler(BridgeError)
    def bridge_error(exc: BridgeError) -> ResponseReturnValue:
        return jsonify(exc.to_dict()), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        body, _ = cast(
            tuple[Response, int],
            error_response(_snake(exc.name), exc.description or exc.name, status),
        )
        # The exception's own headers (Allow on a 405, WWW-Authenticate on a 401), not its
        # HTML content type.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                body.headers[name] = value
        return body, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unexpected error while handling a request")
        return error_response(
            "internal_error",
            "the bridge hit an unexpected error; the details are in its log",
            500,
        )


#: One year, the usual HSTS lifetime (RFC 6797); sent only when cookies are HTTPS-only.
HSTS_MAX_AGE_S = 365 * 24 * 3600


def register_headers(app: Flask, *, hsts: bool) -> None:
    """Headers on every answer: HSTS when the bridge is served over HTTPS (`secure_cookies`),
    and `Cache-Control: no-store` on the staff API and console (private data)."""

    @app.after_request
    def _headers(response: Response) -> Response:
        if hsts:
            response.headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE_S}"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        elif request.path.startswith("/admin/") and not request.path.startswith("/admin/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response
