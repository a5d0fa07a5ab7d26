"""Provisioning: desired state -> planned calls -> a mail server that matches."""

from __future__ import annotations

from sqlalchemy import Engine

from bridge.config import Settings
from bridge.mailserver import MailServer, RateLimiter


def build_mailserver(settings: Settings, engine: Engine) -> MailServer:
    """The process-wide mail-server handle, rate-limited through the shared database."""
    ms = settings.mailserver
    limiter = RateLimiter(engine, f"{ms.base_url}|{ms.username}", ms.rate_limit_per_s)
    return MailServer(ms, limiter)
