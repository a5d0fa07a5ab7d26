"""Alembic environment, run by `bridge db upgrade` and by the test setup."""

from __future__ import annotations

from alembic import context

from bridge.audit import AuditEntry  # noqa: F401
from bridge.db import Base
from bridge.events_query import EventFilter  # noqa: F401  (indexes on events, attempts)
from bridge.mailserver.ratelimit import Gate  # noqa: F401  (register the tables)
from bridge.models import Attempt, Event, Service  # noqa: F401
from bridge.staff import LoginAttempt, StaffToken, StaffUser  # noqa: F401

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
