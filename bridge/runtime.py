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


def build_mailserver(settings: Settings, engine: Engine) -> MailServer:
    """The process-wide mail-server handle, rate-limited through the shared database."""
    ms = settings.mailserver
    limiter = RateLimiter(engine, f"{ms.base_url}|{ms.username}", ms.rate_limit_per_s)
    return MailServer(ms, limiter)


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

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Engine, session factories and mail-server handle for these settings."""
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessionmaker(engine, expire_on_commit=False),
            reads=sessionmaker(read_only(engine), expire_on_commit=False),
            mailserver=build_mailserver(settings, engine),
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
