"""mailbox_backfills and backfill_messages: a registration's backfill and the message ids it listed

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 04:30:00

One row per mailbox with a backfill (its request, state, counts, the change-log
position it dedupes live events from, and its worker claim); the listed ids,
oldest first, are kept in backfill_messages until the backfill completes, so a
restarted worker neither lists again nor reorders (store/backfills.py).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailbox_backfills",
        sa.Column("mailbox_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("newest", sa.Integer(), nullable=True),
        sa.Column("label_ids", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'LISTING'"), nullable=False),
        sa.Column("start_sequence", sa.BigInteger(), nullable=False),
        sa.Column("listed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivered", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_reason", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("state IN ('LISTING', 'DELIVERING', 'COMPLETED')",
                           name=op.f("ck_mailbox_backfills_state_valid")),
        sa.CheckConstraint("newest > 0", name=op.f("ck_mailbox_backfills_newest_positive")),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE",
                                name=op.f("fk_mailbox_backfills_mailbox_id_mailboxes")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE",
                                name=op.f("fk_mailbox_backfills_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("mailbox_id", name=op.f("pk_mailbox_backfills")),
    )
    op.create_index("ix_mailbox_backfills_due", "mailbox_backfills", ["due_at"],
                    postgresql_where=sa.text("state <> 'COMPLETED'"))
    op.create_index("ix_mailbox_backfills_tenant_id", "mailbox_backfills", ["tenant_id"])
    op.create_table(
        "backfill_messages",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("mailbox_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox_backfills.mailbox_id"], ondelete="CASCADE",
                                name=op.f("fk_backfill_messages_mailbox_id_mailbox_backfills")),
        sa.PrimaryKeyConstraint("tenant_id", "mailbox_id", "position", name=op.f("pk_backfill_messages")),
    )


def downgrade() -> None:
    op.drop_table("backfill_messages")
    op.drop_index("ix_mailbox_backfills_tenant_id", table_name="mailbox_backfills")
    op.drop_index("ix_mailbox_backfills_due", table_name="mailbox_backfills", postgresql_where=sa.text("state <> 'COMPLETED'"))
    op.drop_table("mailbox_backfills")
