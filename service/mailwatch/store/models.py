"""SQLAlchemy table definitions: the declared schema the migrations must build.

Every table is declared here once; `tests/integration/store` proves that the
Alembic migrations produce exactly this schema. Queries live in the sibling
modules (one per table) and return domain dataclasses, never these rows.

Conventions: constraint and index names come from one naming convention so
migrations can refer to them; timestamps are `timestamptz` with server-side
defaults (the database clock, stored as UTC instants); every tenant-scoped
table has `tenant_id` and its indexes lead with it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailwatch.domain.backfill import BackfillState
from mailwatch.domain.models import CredentialKind, LabelFilterBehavior, MailboxState

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Longest Pub/Sub payload kept for inspection; the rest is cut off, so a flood
# of huge garbage cannot fill the database.
MALFORMED_DATA_MAX_BYTES = 16 * 1024
# Malformed notifications kept per source (subscription or "push"): the newest
# are kept, older ones dropped (and counted), so whoever can publish to the
# topic cannot fill the database. Retention prunes them like the change log.
MALFORMED_MAX_PER_SOURCE = 1000


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))


def _timestamp(*, nullable: bool = True, **kw) -> Mapped:
    return mapped_column(DateTime(timezone=True), nullable=nullable, **kw)


def _created() -> Mapped[datetime]:
    return _timestamp(nullable=False, server_default=func.now())


def _updated() -> Mapped[datetime]:
    # onupdate applies to ORM flushes and Core update() statements alike.
    return _timestamp(nullable=False, server_default=func.now(), onupdate=func.now())


def _in(column: str, enum_type) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in enum_type)})"


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    pruned_through_sequence: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (UniqueConstraint("name"),)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    # SHA-256 of the whole random key. The key has 256 bits of entropy, so a
    # plain hash is enough (no salt/KDF) and lets authentication be one index
    # lookup instead of a comparison against secrets.
    key_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = _timestamp()

    __table_args__ = (
        UniqueConstraint("key_hash"),
        Index("ix_api_keys_tenant_id_created", "tenant_id", "created"),
    )


class SealedCredentialRow(Base):
    """A tenant's Google credential, sealed once however many mailboxes use it.

    A service-account key or an OAuth client (id and secret): the part of a
    credential that mailboxes share. Rows are never shared across tenants;
    `digest` (SHA-256 of the plaintext, `secrets.SealedSecret`) makes the same
    key registered for 100,000 mailboxes of a tenant one row. Fernet
    ciphertexts of one plaintext all differ (random IV, timestamp), so the
    digest is taken before sealing. A row without a mailbox or settings
    referring to it is deleted (store/sealed_credentials.py).
    """

    __tablename__ = "sealed_credentials"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (
        UniqueConstraint("tenant_id", "digest"),
        CheckConstraint(_in("kind", CredentialKind), name="kind_valid"),
    )


class MailboxRow(Base):
    __tablename__ = "mailboxes"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    email_address: Mapped[str] = mapped_column(Text, nullable=False)  # always lower-cased
    # The address Gmail names in notifications (getProfile's emailAddress at
    # registration, lower-cased): the primary address when registered under an alias.
    gmail_address: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text(f"'{MailboxState.ACTIVE.value}'")
    )
    label_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'")
    )
    label_filter_behavior: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text(f"'{LabelFilterBehavior.INCLUDE.value}'")
    )
    credential_kind: Mapped[str] = mapped_column(Text, nullable=False)
    # The shared part of its credential (a service-account key, an OAuth client);
    # NULL once STOPPED: a stopped mailbox keeps no secret.
    sealed_credential_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("sealed_credentials.id")
    )
    # What is the mailbox's own: an OAuth refresh token (sealed), the address a
    # service account impersonates when it is not the mailbox's (NULL: its own).
    refresh_token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    subject: Mapped[str | None] = mapped_column(Text)
    history_id: Mapped[int | None] = mapped_column(BigInteger)  # last synced
    notified_history_id: Mapped[int | None] = mapped_column(BigInteger)
    watch_expiration: Mapped[datetime | None] = _timestamp()
    next_renewal_at: Mapped[datetime | None] = _timestamp()
    sync_due_at: Mapped[datetime | None] = _timestamp()  # NULL = no sync wanted
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = _timestamp()
    backoff_until: Mapped[datetime | None] = _timestamp()
    sync_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Poison history: consecutive attempts at the history page starting at
    # page_failures_history_id that raised unexpectedly or whose worker was lost
    # (lease lapsed, nothing committed or recorded). Gmail's errors do not count;
    # any normal page commit resets it. A count for another history id is stale (0).
    page_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    page_failures_history_id: Mapped[int | None] = mapped_column(BigInteger)
    # Renewal: consecutive failed users.watch calls (for backoff), and the
    # watch_expiration whose lapse was already reported with WATCH_EXPIRED
    # (a new watch has a new expiration, so the flag resets by itself).
    renew_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    watch_expiry_reported: Mapped[datetime | None] = _timestamp()
    last_notification_at: Mapped[datetime | None] = _timestamp()
    last_sync_at: Mapped[datetime | None] = _timestamp()
    # The last failure, as data: its stable reason, its message, when it happened,
    # and when the failed work (sync or renewal) is tried again.
    last_error: Mapped[str | None] = mapped_column(Text)  # the message
    last_error_reason: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = _timestamp()
    next_attempt_at: Mapped[datetime | None] = _timestamp()
    # The retry time Gmail named in a rate-limit answer: no Gmail call (sync or
    # renewal) is made for the mailbox before it.
    gmail_retry_at: Mapped[datetime | None] = _timestamp()
    # Header names fetched as metadata for MESSAGE_ADDED events; NULL = metadata off.
    metadata_headers: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # Whether draft versions reach the change log (false: changes to drafts are left out).
    include_drafts: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # Early warnings, once per episode: the watch_expiration already announced
    # with WATCH_EXPIRING (a renewed watch has a new expiration, which ends the
    # episode), and whether NOTIFICATIONS_MISSED was sent since the last
    # notification arrived.
    watch_expiring_reported: Mapped[datetime | None] = _timestamp()
    notifications_missed_reported: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    # The topic of the mailbox's Gmail watch (its tenant's, or the deployment's);
    # NULL for rows from before tenants had topics: the deployment's then.
    watch_topic: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (
        UniqueConstraint("tenant_id", "email_address"),
        CheckConstraint(_in("state", MailboxState), name="state_valid"),
        CheckConstraint(_in("label_filter_behavior", LabelFilterBehavior), name="label_filter_behavior_valid"),
        CheckConstraint(_in("credential_kind", CredentialKind), name="credential_kind_valid"),
        CheckConstraint(f"sealed_credential_id IS NOT NULL OR state = '{MailboxState.STOPPED.value}'",
                        name="credential_unless_stopped"),
        CheckConstraint("sync_attempts >= 0", name="sync_attempts_non_negative"),
        CheckConstraint("renew_attempts >= 0", name="renew_attempts_non_negative"),
        CheckConstraint("page_failures >= 0", name="page_failures_non_negative"),
        # ListMailboxes pages by (created, id) within a tenant.
        Index("ix_mailboxes_tenant_id_created_id", "tenant_id", "created", "id"),
        # Finding whether a sealed credential is still used (and the foreign key's checks).
        Index("ix_mailboxes_sealed_credential_id", "sealed_credential_id"),
        # Ingest knows only the address a notification names.
        Index("ix_mailboxes_email_address", "email_address"),
        Index("ix_mailboxes_gmail_address", "gmail_address"),
        # The workers' due queries: small partial indexes over the rows they want.
        Index(
            "ix_mailboxes_sync_due",
            "sync_due_at",
            postgresql_where=text("sync_due_at IS NOT NULL"),
        ),
        # The sync claim's turns: each tenant's oldest due mailboxes (store/sync_claims.py).
        Index(
            "ix_mailboxes_tenant_sync_due",
            "tenant_id",
            "sync_due_at",
            postgresql_where=text("sync_due_at IS NOT NULL"),
        ),
        Index(
            "ix_mailboxes_renewal_due",
            "next_renewal_at",
            postgresql_where=text(f"state = '{MailboxState.ACTIVE.value}'"),
        ),
        # The renewal claim's turns: each tenant's earliest due renewals (store/renewal_claims.py).
        Index(
            "ix_mailboxes_tenant_renewal_due",
            "tenant_id",
            "next_renewal_at",
            postgresql_where=text(f"state = '{MailboxState.ACTIVE.value}'"),
        ),
    )


class TenantGoogleSettingsRow(Base):
    """A tenant's default Google credentials and its Pub/Sub topic (one row per tenant)."""

    __tablename__ = "tenant_google_settings"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(Text, nullable=False)
    credential_kind: Mapped[str] = mapped_column(Text, nullable=False)
    # A service-account key or an OAuth client: the row its mailboxes share.
    sealed_credential_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sealed_credentials.id"), nullable=False
    )
    credential_id: Mapped[str] = mapped_column(Text, nullable=False)  # SA e-mail or OAuth client id: not secret
    pubsub_topic: Mapped[str] = mapped_column(Text, nullable=False)
    pubsub_subscription: Mapped[str | None] = mapped_column(Text)  # NULL: push delivery
    push_audience: Mapped[str | None] = mapped_column(Text)
    # The tenant's own Gmail quota budget (units a minute, all replicas together); NULL: the deployment's.
    gmail_units_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (
        CheckConstraint(_in("credential_kind", CredentialKind), name="credential_kind_valid"),
        CheckConstraint("gmail_units_per_minute >= 0", name="gmail_units_per_minute_non_negative"),
    )


class GmailBudgetBucketRow(Base):
    """A tenant's Gmail quota budget as one token bucket every replica takes from
    (gmail/budget.py, store/gmail_budgets.py): the units left as of `updated`
    (negative: in debt), refilled at the tenant's budget as time passes."""

    __tablename__ = "gmail_budget_buckets"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    tokens: Mapped[float] = mapped_column(Double, nullable=False)
    updated: Mapped[datetime] = _timestamp(nullable=False)


class TenantLimitsRow(Base):
    """A tenant's own limits on this service's resources (usage_limits.py); NULL: the deployment's."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    streams: Mapped[int | None] = mapped_column(BigInteger)  # open StreamChanges, all replicas; 0: none
    rpcs_per_second: Mapped[int | None] = mapped_column(BigInteger)  # each API key, all replicas; 0: none
    registrations_per_minute: Mapped[int | None] = mapped_column(BigInteger)  # all replicas; 0: none
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (
        CheckConstraint("streams >= 0", name="streams_non_negative"),
        CheckConstraint("rpcs_per_second >= 0", name="rpcs_per_second_non_negative"),
        CheckConstraint("registrations_per_minute >= 0", name="registrations_per_minute_non_negative"),
    )


class UsageBucketRow(Base):
    """A token bucket of one tenant's limit that every replica takes from (usage_limits.py,
    store/usage_buckets.py): `bucket` is "registrations" or "rpc:" + an API key's digest (hex);
    the tokens left as of `updated`, and what the last take got (0: refused)."""

    __tablename__ = "usage_buckets"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[str] = mapped_column(Text, primary_key=True)
    tokens: Mapped[float] = mapped_column(Double, nullable=False)
    taken: Mapped[float] = mapped_column(Double, nullable=False)
    updated: Mapped[datetime] = _timestamp(nullable=False)


class TenantStreamLeaseRow(Base):
    """One open `StreamChanges` stream of a tenant, counted against its limit while `expires`
    is ahead (usage_limits.py, store/stream_leases.py); the replica serving it keeps pushing
    `expires` on, so the streams of a replica that died stop counting within a lease."""

    __tablename__ = "tenant_stream_leases"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    expires: Mapped[datetime] = _timestamp(nullable=False)

    __table_args__ = (Index("ix_tenant_stream_leases_tenant_id_expires", "tenant_id", "expires"),)


class SubscriptionStatusRow(Base):
    """How pulling one Pub/Sub subscription goes, as ingest last saw it (any replica)."""

    __tablename__ = "subscription_statuses"

    subscription: Mapped[str] = mapped_column(Text, primary_key=True)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = _timestamp()
    last_success_at: Mapped[datetime | None] = _timestamp()
    updated: Mapped[datetime] = _updated()


class ChangeEventRow(Base):
    __tablename__ = "change_events"

    # Global identity; per-tenant order equals commit order because writers
    # hold a per-tenant advisory lock while drawing values (see changes.py).
    # The table is range-partitioned by observed_at (a partition per UTC day,
    # plus a default one; store/partitions.py), and Postgres wants the partition
    # key in every unique constraint: hence (sequence, observed_at) and
    # (id, observed_at). The identity alone keeps sequence unique.
    sequence: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, nullable=False, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    # No foreign key to mailboxes: the log is immutable history that is only
    # ever removed by retention (or with its tenant), and skipping the check
    # keeps bulk appends cheap.
    # NULL only for a tenant-wide TEST event (SendTestEvent without a mailbox).
    mailbox_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    email_address: Mapped[str | None] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    history_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(Text)
    thread_id: Mapped[str | None] = mapped_column(Text)
    label_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'")
    )
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    # MESSAGE_ADDED of a metadata-enabled mailbox: MessageMetadata.to_json().
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSONB)
    observed_at: Mapped[datetime] = _timestamp(nullable=False, primary_key=True, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("id", "observed_at"),
        Index("ix_change_events_tenant_id_sequence", "tenant_id", "sequence"),
        # Retention deletes the default partition's expired rows by age.
        Index("ix_change_events_observed_at", "observed_at"),
        {"postgresql_partition_by": "RANGE (observed_at)"},
    )


class MailboxBackfillRow(Base):
    """A registration's backfill (domain/backfill.py): the request, where it stands, and its claim."""

    __tablename__ = "mailbox_backfills"

    mailbox_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    # The request: messages since a time and/or the newest N, carrying every label id.
    since: Mapped[datetime | None] = _timestamp()
    newest: Mapped[int | None] = mapped_column(Integer)
    label_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{BackfillState.LISTING.value}'"))
    # The tenant's last change-log sequence when it was requested: the live MESSAGE_ADDED
    # events it must not repeat come after it (store/backfills.py).
    start_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    listed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The next listed position (oldest first) to deliver: delivered + skipped.
    next_position: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    due_at: Mapped[datetime] = _timestamp(nullable=False, server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Bumped when another request replaces the backfill: the claim is fenced on owner AND
    # generation, so a run of the replaced one (same owner string, same process) writes nothing.
    generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = _timestamp()
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_reason: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = _timestamp()
    completed_at: Mapped[datetime | None] = _timestamp()
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    __table_args__ = (
        CheckConstraint(_in("state", BackfillState), name="state_valid"),
        CheckConstraint("newest > 0", name="newest_positive"),
        # The backfill worker's claim: unfinished backfills, earliest due first.
        Index("ix_mailbox_backfills_due", "due_at",
              postgresql_where=text(f"state <> '{BackfillState.COMPLETED.value}'")),
        Index("ix_mailbox_backfills_tenant_id", "tenant_id"),
    )


class BackfillMessageRow(Base):
    """A message id a backfill listed, at its position oldest first (kept until it completes)."""

    __tablename__ = "backfill_messages"

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    mailbox_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("mailbox_backfills.mailbox_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(Text, nullable=False)
    thread_id: Mapped[str | None] = mapped_column(Text)


class MalformedNotificationRow(Base):
    """A Pub/Sub message ingest could not decode (not tenant-scoped: its tenant is unknown)."""

    __tablename__ = "malformed_notifications"

    id: Mapped[uuid.UUID] = _uuid_pk()
    received_at: Mapped[datetime] = _timestamp(nullable=False, server_default=func.now())
    source: Mapped[str] = mapped_column(Text, nullable=False)  # subscription name or "push"
    pubsub_message_id: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)  # at most MALFORMED_DATA_MAX_BYTES
    attributes: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))

    __table_args__ = (
        Index("ix_malformed_notifications_received_at", "received_at"),
        # The per-source cap keeps the newest rows of a source.
        Index("ix_malformed_notifications_source_received_at", "source", "received_at"),
        # A redelivered message (same Pub/Sub message id, same source) is kept once.
        Index("uq_malformed_notifications_source_message", "source", "pubsub_message_id", unique=True),
    )


tenants = TenantRow.__table__
api_keys = ApiKeyRow.__table__
mailboxes = MailboxRow.__table__

# Fallback poll (`store.claims.mark_quiet_mailboxes_due`): ACTIVE mailboxes with no
# sync pending, oldest sync first. An expression index, so it is declared on
# the table rather than in __table_args__.
Index(
    "ix_mailboxes_poll_due",
    func.coalesce(mailboxes.c.last_sync_at, mailboxes.c.created),
    postgresql_where=text(f"state = '{MailboxState.ACTIVE.value}' AND sync_due_at IS NULL"),
)
change_events = ChangeEventRow.__table__
tenant_google_settings = TenantGoogleSettingsRow.__table__
sealed_credentials = SealedCredentialRow.__table__
subscription_statuses = SubscriptionStatusRow.__table__
tenant_limits = TenantLimitsRow.__table__
usage_buckets = UsageBucketRow.__table__
tenant_stream_leases = TenantStreamLeaseRow.__table__
malformed_notifications = MalformedNotificationRow.__table__
mailbox_backfills = MailboxBackfillRow.__table__
backfill_messages = BackfillMessageRow.__table__
