"""gmail_budget_buckets: each tenant's Gmail quota budget, one bucket shared by every replica

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 05:00:00

A row per tenant that spends a budget: the units left as of `updated`
(negative: in debt). Replicas take units from it in grants of about a
second of the budget (gmail/budget.py, store/gmail_budgets.py), so the
budget holds for the tenant across all replicas, not per replica.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gmail_budget_buckets",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_gmail_budget_buckets_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_gmail_budget_buckets")),
    )


def downgrade() -> None:
    op.drop_table("gmail_budget_buckets")
