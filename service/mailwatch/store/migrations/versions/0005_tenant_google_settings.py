"""tenant Google settings, each mailbox's watch topic, subscription health

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:10:00

- `tenant_google_settings`: a tenant's default credentials (sealed) and its
  Pub/Sub topic / subscription in the credentials' Google project.
- `mailboxes.watch_topic`: the topic the mailbox's Gmail watch publishes to
  (renewals re-watch with it; NULL means the deployment's topic).
- `subscription_statuses`: per subscription, whether ingest's last pull
  worked, shared by every replica so tenants and operators can read it.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("watch_topic", sa.Text(), nullable=True))
    op.create_table(
        "tenant_google_settings",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("credential_kind", sa.Text(), nullable=False),
        sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("credential_id", sa.Text(), nullable=False),
        sa.Column("pubsub_topic", sa.Text(), nullable=False),
        sa.Column("pubsub_subscription", sa.Text(), nullable=True),
        sa.Column("push_audience", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "credential_kind IN ('SERVICE_ACCOUNT', 'OAUTH')",
            name=op.f("ck_tenant_google_settings_credential_kind_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_google_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_google_settings")),
    )
    op.create_table(
        "subscription_statuses",
        sa.Column("subscription", sa.Text(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("subscription", name=op.f("pk_subscription_statuses")),
    )


def downgrade() -> None:
    op.drop_table("subscription_statuses")
    op.drop_table("tenant_google_settings")
    op.drop_column("mailboxes", "watch_topic")
