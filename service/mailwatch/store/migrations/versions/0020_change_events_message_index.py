"""change_events (tenant_id, mailbox_id, message_id, sequence): a backfill batch's duplicate check

A backfill batch asks the log for its 50 message ids' events since the backfill started;
without this index that was a scan of every event of the tenant since then, once per batch.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 07:20:00
"""

from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On the partitioned parent: Postgres builds it on every partition, and on each one created later.
    op.create_index("ix_change_events_tenant_id_mailbox_id_message_id", "change_events",
                    ["tenant_id", "mailbox_id", "message_id", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_change_events_tenant_id_mailbox_id_message_id", table_name="change_events")
