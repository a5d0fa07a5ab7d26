"""One runtime object per process: settings, database and the mail-server handle.

The web app keeps it on `app.extensions["bridge.runtime"]` (see bridge/web.py), the CLI and
`bridge worker` build their own. Everything below the web faces takes it as `rt`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bridge.config import Settings
from bridge.db import make_engine, read_only, transaction
from bridge.mailserver import MailServer, RateLimiter

#: The share of `mailserver.rate_limit_per_s` kept for staff reads (the console's "refresh",
#: the API's service view), through a gate row of their own: they never take a slot that
#: provisioning needs, and provisioning gets the rest.
STAFF_READ_SHARE = 0.1


def build_mailserver(settings: Settings, engine: Engine) -> MailServer:
    """The process-wide mail-server handle, rate-limited through the shared database."""
    ms = settings.mailserver
    rate = ms.rate_limit_per_s * (1 - STAFF_READ_SHARE)
    return MailServer(ms, RateLimiter(engine, f"{ms.base_url}|{ms.username}", rate))


def build_staff_reader(settings: Settings, engine: Engine, main: MailServer) -> MailServer:
    """The handle staff reads go through: the same connection pool and token as `main`, and
    a gate of its own at STAFF_READ_SHARE of the rate."""
    ms = settings.mailserver
    key = f"{ms.base_url}|{ms.username}|staff-reads"
    limiter = RateLimiter(engine, key, ms.rate_limit_per_s * STAFF_READ_SHARE)
    reader = MailServer(ms, limiter, http=main.http)
    reader.tokens = main.tokens
    reader.token_gate = main.limiter  # one token for the fleet, staff reads included
    return reader


@dataclass(frozen=True)
class Runtime:
    """What a process needs to do the bridge's work."""

    settings: Settings
    engine: Engine
    #: Write sessions: use them through `transaction()` (BEGIN IMMEDIATE on SQLite).
    sessions: sessionmaker[Session]
    #: Read sessions: autocommit, no lock, never a transaction left open.
    reads: sessionmaker[Session]
    mailserver: MailServer
    #: For staff reads only, from their own small share of the rate (see STAFF_READ_SHARE).
    staff_mailserver: MailServer

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Engine, session factories and mail-server handle for these settings."""
        engine = make_engine(settings.database_url)
        mailserver = build_mailserver(settings, engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessionmaker(engine, expire_on_commit=False),
            reads=sessionmaker(read_only(engine), expire_on_commit=False),
            mailserver=mailserver,
            staff_mailserver=build_staff_reader(settings, engine, mailserver),
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short write transaction: commit on success, roll back on error."""
        with transaction(self.sessions) as session:
            yield session

    def dispose(self) -> None:
        """Close the pooled connections (tests, and the CLI on exit)."""
        self.engine.dispose()

    def with_settings(self, settings: Settings) -> Runtime:
        """The same database and mail-server handle under new settings (a config reload)."""
        return dataclasses.replace(self, settings=settings)
