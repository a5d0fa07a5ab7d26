"""One error tree, one JSON error shape: {error, message, errors?}."""

from __future__ import annotations

from typing import Any


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
