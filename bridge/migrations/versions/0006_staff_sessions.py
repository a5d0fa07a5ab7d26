"""staff_users.session_generation: logout, disable, a role change or a password reset end every
console session of that person; login_attempts by (ip, at) for the per-address login
limit; account_reads: the last read of a service's DomainAdmin, shown
by the console instead of a read per page view. The role column also takes "admin" (a
non-native enum: no schema change).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_login_attempts_ip_at", ["ip", "at"], unique=False)
    op.create_table(
        "account_reads",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_by", sa.String(length=320), nullable=True),
        sa.Column("account", sa.JSON(), nullable=True),
        sa.Column("target", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("service_id"),
    )


def downgrade() -> None:
    op.drop_table("account_reads")
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempts_ip_at")
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("session_generation")
