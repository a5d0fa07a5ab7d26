"""Mail-server failures, classified by cause: retry later, or a person must act."""

from __future__ import annotations

from bridge.errors import BridgeError

MESSAGE_LIMIT = 300


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Keep a server's message short enough for a log line and an answer."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MailServerError(BridgeError):
    """A call to the NMS API did not succeed."""

    http_status = 502

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(reason, truncate(message))
        self.status = status


class TransientError(MailServerError):
    """Timeout, connection failure, 429, 5xx, gateway page: retry on the schedule."""

    retryable = True

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, message, status=status)
        self.retry_after = retry_after


class PermanentError(MailServerError):
    """Validation, conflict, not permitted: retrying the same call cannot help."""
