"""Drop change_events' message-id index where 0020 built it

0020 once indexed the log's (tenant_id, mailbox_id, message_id, sequence) for a backfill
batch's duplicate check. A backfill now reads the tenant's log since its start once in all
(each batch on from where the one before stopped: `store.backfills.LiveLog`), which needs
no index, while the index cost every appended event an entry (~90 bytes with Gmail's
16-character ids, next to the 413 bytes an event takes with the log's other indexes).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 12:40:00
"""

from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_change_events_tenant_id_mailbox_id_message_id")


def downgrade() -> None:
    pass  # 0020 no longer builds it either
