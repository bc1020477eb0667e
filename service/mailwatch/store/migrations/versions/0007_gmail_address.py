"""mailboxes.gmail_address: the canonical address Gmail's notifications name

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 09:45:00

A mailbox may be registered under an alias; Gmail's notifications name the
primary address (`getProfile.emailAddress`), which registration now stores
here. Ingest matches notifications on it (`ix_mailboxes_gmail_address`).
Existing rows start with their registered address, as before.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("gmail_address", sa.Text(), nullable=True))
    op.execute("UPDATE mailboxes SET gmail_address = email_address")
    op.alter_column("mailboxes", "gmail_address", nullable=False)
    op.create_index("ix_mailboxes_gmail_address", "mailboxes", ["gmail_address"])


def downgrade() -> None:
    op.drop_index("ix_mailboxes_gmail_address", table_name="mailboxes")
    op.drop_column("mailboxes", "gmail_address")
