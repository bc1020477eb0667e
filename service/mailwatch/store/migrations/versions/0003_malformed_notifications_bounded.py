"""malformed notifications: deduplicated by Pub/Sub message id, capped per source

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 09:00:00

- `uq_malformed_notifications_source_message`: a redelivered malformed message
  (same source, same Pub/Sub message id) is stored once (INSERT … ON CONFLICT
  DO NOTHING). Rows without a message id never conflict (NULLs are distinct).
  Duplicates already stored are removed first, keeping the earliest.
- `ix_malformed_notifications_source_received_at`: the per-source cap deletes
  a source's oldest rows beyond the newest N.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            DELETE FROM malformed_notifications AS m
            USING malformed_notifications AS earlier
            WHERE m.pubsub_message_id IS NOT NULL
              AND earlier.source = m.source
              AND earlier.pubsub_message_id = m.pubsub_message_id
              AND (earlier.received_at, earlier.id) < (m.received_at, m.id)
            """
        )
    )
    op.create_index(
        "uq_malformed_notifications_source_message",
        "malformed_notifications",
        ["source", "pubsub_message_id"],
        unique=True,
    )
    op.create_index(
        "ix_malformed_notifications_source_received_at",
        "malformed_notifications",
        ["source", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_malformed_notifications_source_received_at", table_name="malformed_notifications")
    op.drop_index("uq_malformed_notifications_source_message", table_name="malformed_notifications")
