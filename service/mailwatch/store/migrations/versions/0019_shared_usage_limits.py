"""usage_buckets, tenant_stream_leases: tenants' limits on our own resources, counted once for every replica

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 07:30:00

`usage_buckets`: a token bucket per tenant and bucket name
("registrations", or "rpc:" + an API key's digest), refilled by Postgres's
clock (store/usage_buckets.py). `tenant_stream_leases`: one row per open
`StreamChanges` stream, counted while `expires` is ahead; the replica holding
the stream pushes `expires` on, so a killed replica's streams stop counting
once their lease runs out (store/stream_leases.py).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_buckets",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("taken", sa.Double(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_usage_buckets_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "bucket", name=op.f("pk_usage_buckets")),
    )
    op.create_table(
        "tenant_stream_leases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_tenant_stream_leases_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_stream_leases")),
    )
    op.create_index("ix_tenant_stream_leases_tenant_id_expires", "tenant_stream_leases", ["tenant_id", "expires"])


def downgrade() -> None:
    op.drop_index("ix_tenant_stream_leases_tenant_id_expires", table_name="tenant_stream_leases")
    op.drop_table("tenant_stream_leases")
    op.drop_table("usage_buckets")
