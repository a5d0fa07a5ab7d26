"""services.created_as_email: the recovery e-mail of the bridge's own create, stored before
the POST, so an account created just before a crash or a lost answer is recognised as ours
even after a transfer changed the client's e-mail

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_as_email", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("created_as_email")
