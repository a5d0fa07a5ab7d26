"""Flask glue shared by the web faces (hooks, console, API, ops): the runtime of this app,
the request's read session, the write transaction, and the one JSON error shape."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from flask import Flask, Request, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import BaseConverter, IntegerConverter
from werkzeug.utils import cached_property
from werkzeug.wrappers import Response
from werkzeug.wsgi import LimitedStream

from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.models import MAX_ROW_ID
from bridge.runtime import Runtime

log = logging.getLogger(__name__)


class RowId(IntegerConverter):
    """`<int:...>` in every route: a row id from 0 to MAX_ROW_ID; a larger one is 404."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(map, *args, **kwargs)


class SourceName(BaseConverter):
    """`<source:...>`: a source's name as the config allows it, with at least one letter, so
    `/api/services/1/reconcile` is never read as source `1`, billing id `reconcile`."""

    regex = r"[a-z0-9_-]*[a-z_-][a-z0-9_-]*"


class BillingId(BaseConverter):
    """`<billing_id:...>`: a billing system's service id (digits, as intake accepts them), kept
    as text the way the ledger stores it; `/api/services/x/reconcile` is then no service."""

    regex = r"[0-9]{1,19}"


class _BodyAtMost(LimitedStream):
    """A body without Content-Length (chunked), read up to max_content_length: one byte
    more is 413. Werkzeug's own stream stops quietly at the limit on a full read, which
    would hand the view a truncated body."""

    def on_exhausted(self) -> None:
        if self._stream.read(1):
            raise RequestEntityTooLarge()

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted:
            self.on_exhausted()
        return data


class BoundedRequest(Request):
    """Flask's request, except that a chunked body over MAX_CONTENT_LENGTH is 413."""

    @cached_property
    def stream(self) -> Any:
        """The body stream (see _BodyAtMost)."""
        limit = self.max_content_length
        if (
            limit is not None
            and self.content_length is None
            and "wsgi.input_terminated" in self.environ
        ):
            return _BodyAtMost(self.environ["wsgi.input"], limit, is_max=True)
        return super().stream


class RuntimeBox:
    """The runtime of one server, shared by its faces (bridge/app.py); a config reload puts
    a new one in."""

    __slots__ = ("rt",)

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt


def init_app(app: Flask, box: RuntimeBox) -> None:
    """Attach the runtime; the request's read session closes at teardown. Before any
    blueprint: bounded ids in routes and bounded request bodies."""
    app.extensions["bridge.runtime"] = box
    app.teardown_request(_close_session)
    app.request_class = BoundedRequest
    app.url_map.converters["int"] = RowId
    app.url_map.converters["source"] = SourceName
    app.url_map.converters["billing_id"] = BillingId


def runtime(app: Flask | None = None) -> Runtime:
    """This app's runtime (the current app's when none is given)."""
    return cast(RuntimeBox, (app or current_app).extensions["bridge.runtime"]).rt


def use_settings(app: Flask, settings: Settings) -> None:
    """Serve new settings from now on (a config reload); the database and client stay."""
    box = cast(RuntimeBox, app.extensions["bridge.runtime"])
    box.rt = box.rt.with_settings(settings)


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def refuse_prefixes(app: Flask, prefixes: tuple[str, ...]) -> None:
    """On a server that does not serve them: a clear 404 for the other face's paths."""

    def elsewhere(rest: str = "") -> ResponseReturnValue:
        return error_response(
            "not_served_here",
            "this server takes webhooks only; the staff console and API are served by the "
            "bridge's staff server (see the deployment notes)",
            404,
        )

    for prefix in prefixes:
        for rule in (prefix, f"{prefix}/<path:rest>"):
            app.add_url_rule(rule, f"elsewhere:{rule}", elsewhere, methods=_ANY_METHOD)


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
