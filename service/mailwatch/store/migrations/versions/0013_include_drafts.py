"""mailboxes.include_drafts: whether draft versions reach a registration's change log

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 04:30:00

false (the default, for existing registrations too): changes to drafts are
left out (sync/history_events.py); RegisterMailbox's include_drafts sets it.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("include_drafts", sa.Boolean(), server_default=sa.text("false"),
                                         nullable=False))


def downgrade() -> None:
    op.drop_column("mailboxes", "include_drafts")
