"""tenant_limits: a tenant's own limits on mailwatch's resources (streams, RPC rate, registrations)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 04:30:00

One row per tenant that has any limit of its own; a NULL column means the
deployment's (MAILWATCH_LIMITS_*), 0 no limit (usage_limits.py).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_limits",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=True),
        sa.Column("rpcs_per_second", sa.BigInteger(), nullable=True),
        sa.Column("registrations_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("streams >= 0", name=op.f("ck_tenant_limits_streams_non_negative")),
        sa.CheckConstraint("rpcs_per_second >= 0", name=op.f("ck_tenant_limits_rpcs_per_second_non_negative")),
        sa.CheckConstraint("registrations_per_minute >= 0",
                           name=op.f("ck_tenant_limits_registrations_per_minute_non_negative")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_limits_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_limits")),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
