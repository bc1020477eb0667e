"""mailbox_backfills.generation: bumped when another request replaces a backfill (claim fence)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 05:40:00
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailbox_backfills", sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    op.drop_column("mailbox_backfills", "generation")
