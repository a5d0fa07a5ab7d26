"""The NMS API v1 client, its rate limiter and its error classes."""

from __future__ import annotations

from bridge.mailserver.client import (
    Account,
    Call,
    DomainAdmin,
    MailServer,
    MailServerClient,
    MailUser,
)
from bridge.mailserver.errors import MailServerError, PermanentError, TransientError
from bridge.mailserver.ratelimit import RateLimiter

__all__ = [
    "Account",
    "Call",
    "DomainAdmin",
    "MailServer",
    "MailServerClient",
    "MailServerError",
    "MailUser",
    "PermanentError",
    "RateLimiter",
    "TransientError",
]
