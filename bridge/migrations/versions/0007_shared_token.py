"""mailserver_gate: the API token shared by every process (token, token_valid_to,
token_renew_at, login_until) and why calls pause when it is not a run of failures
(open_reason, e.g. a ban).

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailserver_gate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("open_reason", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("token", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("token_valid_to", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("token_renew_at", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("login_until", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("mailserver_gate", schema=None) as batch_op:
        batch_op.drop_column("login_until")
        batch_op.drop_column("token_renew_at")
        batch_op.drop_column("token_valid_to")
        batch_op.drop_column("token")
        batch_op.drop_column("open_reason")
