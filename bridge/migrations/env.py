"""Alembic environment, run by `bridge db upgrade` and by the test setup."""

from __future__ import annotations

from alembic import context

import bridge.models  # noqa: F401  (every table registers on Base.metadata)
from bridge.db import Base

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
