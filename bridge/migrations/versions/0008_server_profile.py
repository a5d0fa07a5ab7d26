"""server_profiles: what `bridge check-server` observed of the mail server, one row per
base URL (the profile as JSON, the checks shown, when).

Revision ID: 0008
Revises: 0009 (the lead re-chains the numbers at merge)
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_profiles",
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("base_url"),
    )


def downgrade() -> None:
    op.drop_table("server_profiles")
