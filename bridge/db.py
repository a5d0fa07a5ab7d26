"""Database engine and sessions; SQLite (WAL) by default, PostgreSQL for scale-out.

The transaction rule (docs/architecture.md#transactions): building blocks take a session and
never commit; writes happen in `transaction()`, short, and never across a network call; reads
use the autocommit engine of `read_only()` and hold nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    """Declarative base for every table."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def make_engine(url: str, *, immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs for several processes at once.

    `immediate=False` (SQLite only) leaves the driver in autocommit: each statement sees
    the newest data and takes no lock. Tests use it to look at the database.
    """
    parsed = make_url(url)
    # Statement parameters (the shared API token, password hashes, e-mails) never appear in
    # SQL logging or in the text of a database error.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "factory": _SQLiteConnection}, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so BEGIN IMMEDIATE below
        # takes the write lock up front: two processes never both read-then-write.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Reads (an AUTOCOMMIT engine, see read_only()) take no lock at all.
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                sqlite_conn = conn.connection.driver_connection
                sqlite_conn.hold_write_lock()
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                except BaseException:
                    sqlite_conn.release_write_lock()
                    raise

    return engine


#: How long a write waits for SQLite's lock before "database is locked".
BUSY_TIMEOUT_S = 30

_WRITE_LOCKS: dict[str, threading.Lock] = {}


class _SQLiteConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions queue on one lock per database file and
    process before they ask SQLite for its write lock.

    SQLite makes a writer that finds the lock taken sleep and try again, after 1, 2, 5, 10,
    ... up to 100 ms (https://www.sqlite.org/c3ref/busy_timeout.html), while a transaction
    holds the lock for about a millisecond: with a gunicorn worker's threads all writing, most
    of their time went to those sleeps. Queued here, the next writer starts as soon as the
    previous one commits; only the other processes (a second worker, `bridge worker`) still
    meet SQLite's busy wait.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        path = os.path.abspath(os.fsdecode(database))
        self._write_lock = _WRITE_LOCKS.setdefault(path, threading.Lock())
        self._holding = False

    def hold_write_lock(self) -> None:
        """Wait for this process's turn to write (the caller then runs BEGIN IMMEDIATE)."""
        if self._holding:
            return
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked")
        self._holding = True

    def release_write_lock(self) -> None:
        if self._holding:
            self._holding = False
            self._write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_write_lock()


def read_only(engine: Engine) -> Engine:
    """The same pool in autocommit: every statement reads the newest committed rows, no
    transaction stays open and, on SQLite, no write lock is taken (readers never block intake).
    """
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
