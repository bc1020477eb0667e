"""tenant_google_settings.gmail_units_per_minute (a tenant's own Gmail quota budget) and the sync claim's per-tenant index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:30:00

NULL: the deployment's budget (MAILWATCH_GMAIL_TENANT_UNITS_PER_MINUTE);
0: none; otherwise the Gmail quota units a minute the tenant may spend from
each replica (gmail/budget.py). ix_mailboxes_tenant_sync_due serves the
sync claim's turns: each tenant's oldest due mailboxes (store/sync_claims.py).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenant_google_settings", sa.Column("gmail_units_per_minute", sa.BigInteger(), nullable=True))
    op.create_check_constraint(op.f("ck_tenant_google_settings_gmail_units_per_minute_non_negative"),
                               "tenant_google_settings", "gmail_units_per_minute >= 0")
    op.create_index("ix_mailboxes_tenant_sync_due", "mailboxes", ["tenant_id", "sync_due_at"],
                    postgresql_where=sa.text("sync_due_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_mailboxes_tenant_sync_due", table_name="mailboxes")
    op.drop_constraint(op.f("ck_tenant_google_settings_gmail_units_per_minute_non_negative"),
                       "tenant_google_settings", type_="check")
    op.drop_column("tenant_google_settings", "gmail_units_per_minute")
