"""events: indexes for the console's per-status counts and unresolved failures, filtered by
source or not: (source, status, resolved_at) and (status, resolved_at). At 1,000,000 events a
source-filtered page's counts went from a table walk to an index-only scan.

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_events_source_status_resolved", "events", ["source", "status", "resolved_at"]
    )
    op.create_index("ix_events_status_resolved", "events", ["status", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_events_status_resolved", table_name="events")
    op.drop_index("ix_events_source_status_resolved", table_name="events")
