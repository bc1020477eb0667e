"""renewal bookkeeping on mailboxes; an index for the fallback poll

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:05:00

- `renew_attempts`: consecutive failed users.watch calls (renewal backoff).
- `watch_expiry_reported`: the watch_expiration already reported with
  WATCH_EXPIRED, so the event is written once per lapsed watch.
- `ix_mailboxes_poll_due`: the fallback poll scans ACTIVE mailboxes with no
  sync pending by their last sync time; without this index that scan reads
  every registered mailbox on every tick.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "mailboxes", sa.Column("renew_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("mailboxes", sa.Column("watch_expiry_reported", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_mailboxes_renew_attempts_non_negative"), "mailboxes", "renew_attempts >= 0"
    )
    op.create_index(
        "ix_mailboxes_poll_due",
        "mailboxes",
        [sa.text("coalesce(last_sync_at, created)")],
        postgresql_where=sa.text("state = 'ACTIVE' AND sync_due_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_mailboxes_poll_due", table_name="mailboxes")
    op.drop_constraint(op.f("ck_mailboxes_renew_attempts_non_negative"), "mailboxes", type_="check")
    op.drop_column("mailboxes", "watch_expiry_reported")
    op.drop_column("mailboxes", "renew_attempts")
