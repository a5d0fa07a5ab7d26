"""Alembic environment, run by `bridge db upgrade` and by the test setup."""

from __future__ import annotations

from alembic import context

from bridge.db import Base
from bridge.mailserver.ratelimit import Gate  # noqa: F401  (register the tables)
from bridge.models import Attempt, Event, Service  # noqa: F401

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
