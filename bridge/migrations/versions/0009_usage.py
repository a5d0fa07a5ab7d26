"""service_usage: what the mail server last reported each bound service's DomainAdmin uses;
worker_schedule: when a periodic worker task (the usage refresh) is next due

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_usage",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("storage_used_mb", sa.Integer(), nullable=True),
        sa.Column("storage_total_mb", sa.Integer(), nullable=True),
        sa.Column("mailboxes_used", sa.Integer(), nullable=True),
        sa.Column("mailboxes_limit", sa.Integer(), nullable=True),
        sa.Column("domains_used", sa.Integer(), nullable=True),
        sa.Column("domains_limit", sa.Integer(), nullable=True),
        sa.Column("aliases_used", sa.Integer(), nullable=True),
        sa.Column("aliases_limit", sa.Integer(), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("service_id"),
    )
    op.create_table(
        "worker_schedule",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("worker_schedule")
    op.drop_table("service_usage")
