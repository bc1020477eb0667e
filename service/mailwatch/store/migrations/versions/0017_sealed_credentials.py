"""sealed_credentials: a tenant's Google credential stored once, referenced by its mailboxes and settings

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 04:30:00

Each mailbox row held its own sealed copy of its whole credential (a
service-account key is ~4.4 KB of a 4.9 KB row). Now the part a tenant's
mailboxes share (a key, an OAuth client) is one `sealed_credentials` row per
tenant and key; a mailbox keeps only its own part (an OAuth refresh token,
sealed; a service account's subject when it is not the mailbox's address).

Existing credentials are deduplicated by the SHA-256 of their decrypted shared
part, not of their ciphertext: Fernet seals every copy with a fresh random IV
and a timestamp, so 100,000 copies of one key are 100,000 different
ciphertexts, and a ciphertext digest would deduplicate nothing. So this
migration needs the Fernet keys (`mailwatch migrate` passes
MAILWATCH_SECRET_KEYS) whenever there are credentials to convert, and refuses
without them. A ciphertext no configured key opens (its mailbox already fails
with CREDENTIAL_UNDECRYPTABLE) is kept as it is in a row of its own, keyed by
a digest of the ciphertext, and stays undecryptable until re-registration.
A STOPPED mailbox keeps no secret: its credential is dropped.

The downgrade seals each mailbox's whole credential again (keys needed too);
a STOPPED mailbox gets an empty ciphertext (undecryptable, never used).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIGEST_PREFIX = b"mailwatch sealed credential v2\0"  # as mailwatch.secrets (frozen here)
_UNDECRYPTABLE_PREFIX = b"mailwatch undecryptable v1 ciphertext\0"
_BATCH = 1000


def _canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _fernet() -> MultiFernet:
    keys = op.get_context().config.attributes.get("secret_keys") or tuple(
        os.environ.get("MAILWATCH_SECRET_KEYS", "").split(","))
    fernets = [Fernet(key.strip()) for key in keys if key and key.strip()]
    if not fernets:
        raise RuntimeError(
            "migration 0017 re-seals the stored Google credentials and needs the Fernet keys: "
            "set MAILWATCH_SECRET_KEYS (as for `mailwatch serve`) and run `mailwatch migrate` again")
    return MultiFernet(fernets)


def _split(fernet: MultiFernet, ciphertext: bytes, kind: str, email_address: str) -> tuple[dict | None, bytes | None, str | None]:
    """A v1 whole credential -> (v2 shared document, sealed refresh token, subject if not the address).
    (None, None, None) when it cannot be opened."""
    try:
        document = json.loads(fernet.decrypt(bytes(ciphertext)))
        if document.get("v") != 1 or document.get("kind") != kind:
            return None, None, None
        if kind == "SERVICE_ACCOUNT":
            subject = str(document["subject"])
            return ({"v": 2, "kind": kind, "info": dict(document["info"])}, None,
                    None if subject.strip().lower() == email_address else subject)
        shared = {"v": 2, "kind": kind, "client_id": str(document["client_id"]),
                  "client_secret": str(document["client_secret"])}
        return shared, fernet.encrypt(str(document["refresh_token"]).encode("utf-8")), None
    except (InvalidToken, ValueError, KeyError, TypeError, AttributeError):
        return None, None, None


class _Rows:
    """The tenant's sealed rows by digest, inserted as first met."""

    def __init__(self, connection, fernet: MultiFernet) -> None:
        self.connection, self.fernet, self.ids = connection, fernet, {}

    def id_for(self, tenant_id, kind: str, ciphertext: bytes, shared: dict | None):
        if shared is None:  # not openable: its own row, the ciphertext kept as it is
            digest = hashlib.sha256(_UNDECRYPTABLE_PREFIX + bytes(ciphertext)).digest()
            sealed = bytes(ciphertext)
        else:
            digest = hashlib.sha256(_DIGEST_PREFIX + _canonical(shared)).digest()
            sealed = None
        key = (tenant_id, digest)
        if key not in self.ids:
            self.ids[key] = self.connection.execute(sa.text(
                "INSERT INTO sealed_credentials (tenant_id, kind, digest, ciphertext) VALUES (:t, :k, :d, :c) "
                "RETURNING id"), {"t": tenant_id, "k": kind, "d": digest,
                                  "c": sealed if sealed is not None else self.fernet.encrypt(_canonical(shared))},
            ).scalar_one()
        return self.ids[key]


def upgrade() -> None:
    op.create_table(
        "sealed_credentials",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('SERVICE_ACCOUNT', 'OAUTH')", name=op.f("ck_sealed_credentials_kind_valid")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_sealed_credentials_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_credentials")),
        sa.UniqueConstraint("tenant_id", "digest", name=op.f("uq_sealed_credentials_tenant_id_digest")),
    )
    op.add_column("mailboxes", sa.Column("sealed_credential_id", sa.Uuid(), nullable=True))
    op.add_column("mailboxes", sa.Column("refresh_token_ciphertext", sa.LargeBinary(), nullable=True))
    op.add_column("mailboxes", sa.Column("subject", sa.Text(), nullable=True))
    op.add_column("tenant_google_settings", sa.Column("sealed_credential_id", sa.Uuid(), nullable=True))

    connection = op.get_bind()
    pending = connection.execute(sa.text(
        "SELECT (SELECT count(*) FROM mailboxes WHERE state <> 'STOPPED') + "
        "(SELECT count(*) FROM tenant_google_settings)")).scalar_one()
    if pending:
        fernet = _fernet()
        rows = _Rows(connection, fernet)
        for tenant_id, kind, ciphertext in connection.execute(sa.text(
                "SELECT tenant_id, credential_kind, credentials_ciphertext FROM tenant_google_settings")).all():
            shared, _, _ = _split(fernet, ciphertext, kind, "")
            connection.execute(sa.text(
                "UPDATE tenant_google_settings SET sealed_credential_id = :s WHERE tenant_id = :t"),
                {"s": rows.id_for(tenant_id, kind, ciphertext, shared), "t": tenant_id})
        after = None
        while True:
            batch = connection.execute(sa.text(
                "SELECT id, tenant_id, email_address, credential_kind, credentials_ciphertext FROM mailboxes "
                "WHERE state <> 'STOPPED' AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) "
                "ORDER BY id LIMIT :n"), {"after": after, "n": _BATCH}).all()
            if not batch:
                break
            updates = []
            for mailbox_id, tenant_id, email_address, kind, ciphertext in batch:
                shared, token, subject = _split(fernet, ciphertext, kind, email_address)
                updates.append({"id": mailbox_id, "s": rows.id_for(tenant_id, kind, ciphertext, shared),
                                "r": token, "j": subject})
            connection.execute(sa.text(
                "UPDATE mailboxes SET sealed_credential_id = :s, refresh_token_ciphertext = :r, subject = :j "
                "WHERE id = :id"), updates)
            after = batch[-1][0]

    op.alter_column("tenant_google_settings", "sealed_credential_id", nullable=False)
    op.create_foreign_key(op.f("fk_tenant_google_settings_sealed_credential_id_sealed_c_6ea3"),
                          "tenant_google_settings", "sealed_credentials", ["sealed_credential_id"], ["id"])
    op.drop_column("tenant_google_settings", "credentials_ciphertext")
    op.create_foreign_key(op.f("fk_mailboxes_sealed_credential_id_sealed_credentials"),
                          "mailboxes", "sealed_credentials", ["sealed_credential_id"], ["id"])
    op.create_index("ix_mailboxes_sealed_credential_id", "mailboxes", ["sealed_credential_id"])
    op.create_check_constraint(op.f("ck_mailboxes_credential_unless_stopped"), "mailboxes",
                               "sealed_credential_id IS NOT NULL OR state = 'STOPPED'")
    op.drop_column("mailboxes", "credentials_ciphertext")


def _whole(fernet: MultiFernet, kind: str, shared_ciphertext: bytes, token: bytes | None, subject: str) -> bytes:
    """A v1 whole credential from the v2 parts; a row kept undecryptable goes back as it was."""
    try:
        shared = json.loads(fernet.decrypt(bytes(shared_ciphertext)))
    except (InvalidToken, ValueError):
        return bytes(shared_ciphertext)
    if shared.get("v") != 2:
        return bytes(shared_ciphertext)
    if kind == "SERVICE_ACCOUNT":
        body = {"info": shared["info"], "subject": subject}
    else:
        refresh_token = fernet.decrypt(bytes(token)).decode("utf-8") if token is not None else ""
        body = {"client_id": shared["client_id"], "client_secret": shared["client_secret"],
                "refresh_token": refresh_token}
    return fernet.encrypt(json.dumps({"v": 1, "kind": kind, **body}, separators=(",", ":")).encode("utf-8"))


def downgrade() -> None:
    op.add_column("mailboxes", sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=True))
    op.add_column("tenant_google_settings", sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    pending = connection.execute(sa.text("SELECT count(*) FROM sealed_credentials")).scalar_one()
    if pending:
        fernet = _fernet()
        for tenant_id, kind, ciphertext in connection.execute(sa.text(
                "SELECT g.tenant_id, g.credential_kind, s.ciphertext FROM tenant_google_settings g "
                "JOIN sealed_credentials s ON s.id = g.sealed_credential_id")).all():
            connection.execute(sa.text(
                "UPDATE tenant_google_settings SET credentials_ciphertext = :c WHERE tenant_id = :t"),
                {"c": _whole(fernet, kind, ciphertext, None, ""), "t": tenant_id})
        after = None
        while True:
            batch = connection.execute(sa.text(
                "SELECT m.id, m.credential_kind, s.ciphertext, m.refresh_token_ciphertext, "
                "coalesce(m.subject, m.email_address) FROM mailboxes m "
                "JOIN sealed_credentials s ON s.id = m.sealed_credential_id "
                "WHERE CAST(:after AS uuid) IS NULL OR m.id > CAST(:after AS uuid) ORDER BY m.id LIMIT :n"),
                {"after": after, "n": _BATCH}).all()
            if not batch:
                break
            connection.execute(sa.text("UPDATE mailboxes SET credentials_ciphertext = :c WHERE id = :id"), [
                {"id": mailbox_id, "c": _whole(fernet, kind, shared, token, subject)}
                for mailbox_id, kind, shared, token, subject in batch])
            after = batch[-1][0]
    op.execute("UPDATE mailboxes SET credentials_ciphertext = '' WHERE credentials_ciphertext IS NULL")
    op.alter_column("mailboxes", "credentials_ciphertext", nullable=False)
    op.alter_column("tenant_google_settings", "credentials_ciphertext", nullable=False)
    op.drop_constraint(op.f("ck_mailboxes_credential_unless_stopped"), "mailboxes", type_="check")
    op.drop_index("ix_mailboxes_sealed_credential_id", table_name="mailboxes")
    op.drop_constraint(op.f("fk_mailboxes_sealed_credential_id_sealed_credentials"), "mailboxes", type_="foreignkey")
    op.drop_constraint(op.f("fk_tenant_google_settings_sealed_credential_id_sealed_c_6ea3"),
                       "tenant_google_settings", type_="foreignkey")
    op.drop_column("mailboxes", "subject")
    op.drop_column("mailboxes", "refresh_token_ciphertext")
    op.drop_column("mailboxes", "sealed_credential_id")
    op.drop_column("tenant_google_settings", "sealed_credential_id")
    op.drop_table("sealed_credentials")
