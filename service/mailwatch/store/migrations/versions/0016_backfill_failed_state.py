"""mailbox_backfills.state may be FAILED (Gmail refused the backfill's request for good)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 05:00:00
"""

from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_mailbox_backfills_state_valid"


def upgrade() -> None:
    op.drop_constraint(op.f(_NAME), "mailbox_backfills", type_="check")
    op.create_check_constraint(op.f(_NAME), "mailbox_backfills",
                               "state IN ('LISTING', 'DELIVERING', 'COMPLETED', 'FAILED')")


def downgrade() -> None:
    op.execute("UPDATE mailbox_backfills SET state = 'COMPLETED' WHERE state = 'FAILED'")
    op.drop_constraint(op.f(_NAME), "mailbox_backfills", type_="check")
    op.create_check_constraint(op.f(_NAME), "mailbox_backfills", "state IN ('LISTING', 'DELIVERING', 'COMPLETED')")
