"""message metadata on events; early-warning bookkeeping; tenant-wide TEST events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00

- `mailboxes.metadata_headers`: header names fetched for MESSAGE_ADDED
  metadata (NULL = metadata off).
- `mailboxes.watch_expiring_reported` / `notifications_missed_reported`:
  WATCH_EXPIRING and NOTIFICATIONS_MISSED are sent once per episode.
- `change_events.metadata`: the fetched metadata, committed with its event.
- `change_events.mailbox_id` / `email_address` nullable: a TEST event can be
  tenant-wide.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("metadata_headers", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("mailboxes", sa.Column("watch_expiring_reported", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "mailboxes",
        sa.Column("notifications_missed_reported", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("change_events", sa.Column("metadata", postgresql.JSONB(), nullable=True))
    op.alter_column("change_events", "mailbox_id", nullable=True)
    op.alter_column("change_events", "email_address", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM change_events WHERE mailbox_id IS NULL")
    op.alter_column("change_events", "email_address", nullable=False)
    op.alter_column("change_events", "mailbox_id", nullable=False)
    op.drop_column("change_events", "metadata")
    op.drop_column("mailboxes", "notifications_missed_reported")
    op.drop_column("mailboxes", "watch_expiring_reported")
    op.drop_column("mailboxes", "metadata_headers")
