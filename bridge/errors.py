"""One error tree, one JSON error shape: {error, message, errors?}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class BridgeError(Exception):
    """An error with a snake_case reason a support person can search for."""

    http_status = 400
    retryable = False

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.errors = errors
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        body: dict[str, Any] = {"error": self.reason, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class ConfigError(BridgeError):
    """The configuration is missing or wrong; the message names the key path."""


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
        return error_response(_snake(exc.name), exc.description or exc.name, status)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unexpected error while handling a request")
        return error_response(
            "internal_error",
            "the bridge hit an unexpected error; the details are in its log",
            500,
        )
