"""services.bound_*: which DomainAdmin a service is bound to, how, when and by whom;
services.create_requested: a create event was absorbed (only then may the bridge create or
adopt). Services applied before this revision are bound as "before_binding".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bound_how", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("bound_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("bound_by", sa.String(length=320), nullable=True))
        batch_op.add_column(
            sa.Column("create_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    services = sa.table(
        "services",
        sa.column("applied_generation", sa.Integer),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("bound_how", sa.String),
        sa.column("bound_at", sa.DateTime(timezone=True)),
        sa.column("bound_by", sa.String),
    )
    op.execute(
        services.update()
        .where(services.c.applied_generation > 0)
        .values(bound_how="before_binding", bound_at=services.c.updated_at, bound_by="migration")
    )


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("create_requested")
        batch_op.drop_column("bound_by")
        batch_op.drop_column("bound_at")
        batch_op.drop_column("bound_how")
