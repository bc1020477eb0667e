"""ix_mailboxes_tenant_renewal_due: the renewal claim's per-tenant index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:30:00

Serves the renewal claim's turns: each tenant's earliest due renewals
(store/renewal_claims.py), as ix_mailboxes_tenant_sync_due serves the sync
claim's.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_mailboxes_tenant_renewal_due", "mailboxes", ["tenant_id", "next_renewal_at"],
                    postgresql_where=sa.text("state = 'ACTIVE'"))


def downgrade() -> None:
    op.drop_index("ix_mailboxes_tenant_renewal_due", table_name="mailboxes")
