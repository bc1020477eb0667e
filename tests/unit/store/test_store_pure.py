"""Store pieces that need no database: lock keys, key hashing, declared names."""

from __future__ import annotations

import hashlib
import uuid

from mailwatch.store.api_keys import KEY_PREFIX, hash_api_key
from mailwatch.store.changes import CHANGE_LOG_LOCK_CLASS, tenant_lock_key
from mailwatch.store.mailboxes import COLUMNS
from mailwatch.store.migrate import MIGRATION_LOCK_KEY, MIGRATIONS_DIR, head
from mailwatch.store.models import Base


def test_tenant_lock_key_is_a_stable_int4():
    tenant = uuid.UUID("3f1c1f5e-8d6a-4a57-9a55-0d2b8f4e9c11")
    assert tenant_lock_key(tenant) == tenant_lock_key(uuid.UUID(str(tenant)))
    keys = {tenant_lock_key(uuid.uuid4()) for _ in range(1000)}
    assert all(-(2**31) <= k < 2**31 for k in keys)
    assert len(keys) > 990
    assert 0 < CHANGE_LOG_LOCK_CLASS < 2**31
    assert 0 < MIGRATION_LOCK_KEY < 2**63


def test_api_key_hash_is_sha256():
    assert KEY_PREFIX == "mwk_"
    assert hash_api_key("mwk_abc") == hashlib.sha256(b"mwk_abc").digest()


def test_mailbox_reads_never_select_the_ciphertext():
    assert "refresh_token_ciphertext" not in {c.name for c in COLUMNS}


def test_declared_names_follow_the_convention():
    names = {
        constraint.name
        for table in Base.metadata.tables.values()
        for constraint in [*table.constraints, *table.indexes]
    }
    assert {
        "pk_tenants", "uq_tenants_name", "uq_api_keys_key_hash", "fk_api_keys_tenant_id_tenants",
        "uq_mailboxes_tenant_id_email_address", "ck_mailboxes_state_valid", "ix_mailboxes_sync_due",
        "ix_mailboxes_renewal_due", "ix_mailboxes_email_address", "ix_change_events_tenant_id_sequence",
        "pk_change_events", "uq_change_events_id_observed_at",
    } <= names


def test_tenant_scoped_indexes_lead_with_tenant_id():
    for table in Base.metadata.tables.values():
        if "tenant_id" not in table.c:
            continue
        for index in table.indexes:
            if index.name in ("ix_mailboxes_email_address", "ix_mailboxes_gmail_address", "ix_mailboxes_sync_due",
                              "ix_mailboxes_renewal_due", "ix_mailboxes_poll_due", "ix_change_events_observed_at",
                              "ix_mailbox_backfills_due", "ix_mailboxes_sealed_credential_id"):
                # cross-tenant work queues: ingest lookup, workers, retention; and the lookup of a
                # sealed credential's mailboxes that its foreign key's check makes on a delete
                continue
            assert index.columns.keys()[0] == "tenant_id", index.name


def test_single_migration_head_and_files_ship_with_the_package():
    assert head()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "__init__.py").is_file() and (MIGRATIONS_DIR / "versions" / "__init__.py").is_file()
