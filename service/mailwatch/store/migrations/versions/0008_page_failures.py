"""mailboxes.page_failures: consecutive failed attempts at the same history page (poison history)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:50:00

`page_failures` counts the attempts at the history page starting at
`page_failures_history_id` that failed unexpectedly or whose worker was lost
(its lease lapsed with no commit and no recorded failure); Gmail's own errors
do not count. Past a bound the sync works through that page one record at a
time and skips only the records that keep failing (HISTORY_SKIPPED), so one
poison page cannot block a mailbox for ever.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("page_failures", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("mailboxes", sa.Column("page_failures_history_id", sa.BigInteger(), nullable=True))
    op.create_check_constraint(op.f("ck_mailboxes_page_failures_non_negative"), "mailboxes", "page_failures >= 0")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_mailboxes_page_failures_non_negative"), "mailboxes", type_="check")
    op.drop_column("mailboxes", "page_failures_history_id")
    op.drop_column("mailboxes", "page_failures")
