"""initial schema: tenants, api_keys, mailboxes, change_events, malformed_notifications

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:14:06

Drafted with autogenerate, then reviewed by hand. Values (enum members, defaults)
are literals on purpose: a migration must keep meaning what it meant when it
was written, whatever the models say later.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _uuid_pk() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _timestamp(name: str, *, nullable: bool = True, now_default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if now_default else None,
        nullable=nullable,
    )


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        _uuid_pk(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("pruned_through_sequence", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _timestamp("created", nullable=False, now_default=True),
        _timestamp("updated", nullable=False, now_default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )

    op.create_table(
        "api_keys",
        _uuid_pk(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        _timestamp("created", nullable=False, now_default=True),
        _timestamp("revoked_at"),
        _tenant_fk("api_keys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_tenant_id_created", "api_keys", ["tenant_id", "created"])

    op.create_table(
        "mailboxes",
        _uuid_pk(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email_address", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'ACTIVE'"), nullable=False),
        sa.Column("label_ids", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("label_filter_behavior", sa.Text(), server_default=sa.text("'INCLUDE'"), nullable=False),
        sa.Column("credential_kind", sa.Text(), nullable=False),
        sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("history_id", sa.BigInteger(), nullable=True),
        sa.Column("notified_history_id", sa.BigInteger(), nullable=True),
        _timestamp("watch_expiration"),
        _timestamp("next_renewal_at"),
        _timestamp("sync_due_at"),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        _timestamp("lease_expires_at"),
        _timestamp("backoff_until"),
        sa.Column("sync_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _timestamp("last_notification_at"),
        _timestamp("last_sync_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _timestamp("last_error_at"),
        _timestamp("created", nullable=False, now_default=True),
        _timestamp("updated", nullable=False, now_default=True),
        sa.CheckConstraint(
            "state IN ('ACTIVE', 'AUTH_FAILED', 'STOPPED')", name=op.f("ck_mailboxes_state_valid")
        ),
        sa.CheckConstraint(
            "label_filter_behavior IN ('INCLUDE', 'EXCLUDE')",
            name=op.f("ck_mailboxes_label_filter_behavior_valid"),
        ),
        sa.CheckConstraint(
            "credential_kind IN ('SERVICE_ACCOUNT', 'OAUTH')", name=op.f("ck_mailboxes_credential_kind_valid")
        ),
        sa.CheckConstraint("sync_attempts >= 0", name=op.f("ck_mailboxes_sync_attempts_non_negative")),
        _tenant_fk("mailboxes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailboxes")),
        sa.UniqueConstraint("tenant_id", "email_address", name=op.f("uq_mailboxes_tenant_id_email_address")),
    )
    op.create_index("ix_mailboxes_tenant_id_created_id", "mailboxes", ["tenant_id", "created", "id"])
    op.create_index("ix_mailboxes_email_address", "mailboxes", ["email_address"])
    op.create_index(
        "ix_mailboxes_sync_due", "mailboxes", ["sync_due_at"], postgresql_where=sa.text("sync_due_at IS NOT NULL")
    )
    op.create_index(
        "ix_mailboxes_renewal_due", "mailboxes", ["next_renewal_at"], postgresql_where=sa.text("state = 'ACTIVE'")
    )

    op.create_table(
        "change_events",
        sa.Column("sequence", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("mailbox_id", sa.Uuid(), nullable=False),
        sa.Column("email_address", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("history_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("thread_id", sa.Text(), nullable=True),
        sa.Column("label_ids", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        _timestamp("observed_at", nullable=False, now_default=True),
        _tenant_fk("change_events"),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_change_events")),
        sa.UniqueConstraint("id", name=op.f("uq_change_events_id")),
    )
    op.create_index("ix_change_events_tenant_id_sequence", "change_events", ["tenant_id", "sequence"])
    op.create_index("ix_change_events_observed_at", "change_events", ["observed_at"])

    op.create_table(
        "malformed_notifications",
        _uuid_pk(),
        _timestamp("received_at", nullable=False, now_default=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("pubsub_message_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_malformed_notifications")),
    )
    op.create_index("ix_malformed_notifications_received_at", "malformed_notifications", ["received_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints with it.
    op.drop_table("malformed_notifications")
    op.drop_table("change_events")
    op.drop_table("mailboxes")
    op.drop_table("api_keys")
    op.drop_table("tenants")
