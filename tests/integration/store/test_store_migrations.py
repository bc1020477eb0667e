"""Migrations build exactly the declared schema, upgrade and downgrade cleanly,
and the server refuses an unmigrated database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect, pool, text

from mailwatch.database_url import libpq_url
from mailwatch.domain.errors import NotMigrated
from mailwatch.store import create_engine, ensure_migrated
from mailwatch.store.migrate import current, downgrade, head, upgrade
from mailwatch.store.models import Base
from mailwatch.secrets import generate_key

pytestmark = pytest.mark.integration

TABLES = {"tenants", "api_keys", "mailboxes", "change_events", "malformed_notifications", "tenant_google_settings",
          "subscription_statuses", "gmail_budget_buckets", "tenant_limits", "mailbox_backfills",
          "backfill_messages", "sealed_credentials", "usage_buckets", "tenant_stream_leases"}


def _inspect(url, fn):
    engine = create_sync_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return fn(connection)
    finally:
        engine.dispose()


def _partitions(connection) -> set[str]:
    """The change log's partitions: made and dropped at run time, not declared."""
    return set(connection.execute(text("SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'")).scalars())


def _tables(url) -> set[str]:
    return set(_inspect(url, lambda c: set(inspect(c).get_table_names()) - _partitions(c))) - {"alembic_version"}


def test_upgrade_from_empty_then_downgrade_to_base(empty_database_url):
    assert current(empty_database_url) is None
    upgrade(empty_database_url)
    assert current(empty_database_url) == head()
    assert _tables(empty_database_url) == TABLES

    upgrade(empty_database_url)  # already at head: a no-op
    assert current(empty_database_url) == head()

    downgrade(empty_database_url)
    assert current(empty_database_url) is None
    assert _tables(empty_database_url) == set()

    upgrade(empty_database_url)  # and back up again from base
    assert _tables(empty_database_url) == TABLES


def test_migrations_build_exactly_the_declared_models(empty_database_url):
    upgrade(empty_database_url)

    def diff(connection):
        partitions = _partitions(connection)
        assert partitions  # the default one and days ahead
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "compare_server_default": True,
            "include_name": lambda name, type_, parent: not (type_ == "table" and name in partitions),
        })
        return compare_metadata(context, Base.metadata)

    assert _inspect(empty_database_url, diff) == []


def test_replicas_migrating_at_once_serialise(empty_database_url):
    """Several processes (replicas starting together) upgrade the same empty database."""
    code = "import sys; from mailwatch.store.migrate import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, empty_database_url], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        if process.returncode != 0:
            failures.append(stderr.decode()[-2000:])
    assert failures == []
    assert current(empty_database_url) == head()


def test_in_process_callers_serialise(empty_database_url):
    errors: list[BaseException] = []

    def run():
        try:
            upgrade(empty_database_url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert current(empty_database_url) == head()


async def test_ensure_migrated_refuses_an_unmigrated_database(empty_database_url):
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(NotMigrated) as caught:
            await ensure_migrated(engine)
        assert "mailwatch migrate" in str(caught.value)
        assert "\n" not in str(caught.value)
        assert caught.value.reason == "NOT_MIGRATED"

        upgrade(empty_database_url)
        await ensure_migrated(engine)

        downgrade(empty_database_url)
        with pytest.raises(NotMigrated):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()


def test_accepts_plain_postgresql_urls(postgres_server, empty_database_url):
    plain = libpq_url(empty_database_url)
    upgrade(plain)
    assert current(plain) == head()


def test_failure_strings_become_columns_and_back(empty_database_url):
    """0006 splits the "REASON: message" that workers used to write into reason and message."""
    upgrade(empty_database_url, "0005")

    def seed(connection):
        tenant = connection.execute(text("INSERT INTO tenants (name) VALUES ('t') RETURNING id")).scalar_one()
        for email, error in [("a@x.com", "GMAIL_RATE_LIMITED: watch: Gmail answered 429: slow: down"),
                             ("b@x.com", "connection reset by peer"), ("c@x.com", None)]:
            connection.execute(text(
                "INSERT INTO mailboxes (tenant_id, email_address, credential_kind, credentials_ciphertext, last_error) "
                "VALUES (:t, :e, 'OAUTH', '\\x00', :err)"), {"t": tenant, "e": email, "err": error})
        connection.commit()

    def errors(connection):
        rows = connection.execute(text(
            "SELECT email_address, last_error_reason, last_error FROM mailboxes ORDER BY email_address"))
        return [tuple(row) for row in rows]

    _inspect(empty_database_url, seed)
    upgrade(empty_database_url, secret_keys=[generate_key()])  # 0017 re-seals the (garbage) credentials
    assert _inspect(empty_database_url, errors) == [
        ("a@x.com", "GMAIL_RATE_LIMITED", "watch: Gmail answered 429: slow: down"),
        ("b@x.com", None, "connection reset by peer"),
        ("c@x.com", None, None),
    ]
    downgrade(empty_database_url, "0005", secret_keys=[generate_key()])
    rows = _inspect(empty_database_url, lambda c: [tuple(r) for r in c.execute(
        text("SELECT email_address, last_error FROM mailboxes ORDER BY email_address"))])
    assert rows == [("a@x.com", "GMAIL_RATE_LIMITED: watch: Gmail answered 429: slow: down"),
                    ("b@x.com", "connection reset by peer"), ("c@x.com", None)]


def test_a_populated_change_log_becomes_partitioned_and_back(empty_database_url):
    """0009 attaches the existing rows as one partition (no copy), keeps every sequence,
    continues the identity after them, and a skewed future row goes to the default partition."""
    upgrade(empty_database_url, "0008")

    def seed(connection):
        tenant = connection.execute(text("INSERT INTO tenants (name) VALUES ('t') RETURNING id")).scalar_one()
        for days_ago in (9, 3, 0, -40):  # -40: a clock 40 days ahead
            connection.execute(text(
                "INSERT INTO change_events (tenant_id, mailbox_id, email_address, event_type, observed_at) "
                "SELECT :t, gen_random_uuid(), 'a@x.com', 'MESSAGE_ADDED', now() - make_interval(days => :d) "
                "FROM generate_series(1, 5)"), {"t": tenant, "d": days_ago})
        connection.commit()

    def rows(connection):
        return [tuple(row) for row in connection.execute(text(
            "SELECT sequence, id, observed_at FROM change_events ORDER BY sequence"))]

    def homes(connection):
        return dict(connection.execute(text("SELECT sequence, tableoid::regclass::text FROM change_events")).all())

    _inspect(empty_database_url, seed)
    before = _inspect(empty_database_url, rows)
    upgrade(empty_database_url)
    assert _inspect(empty_database_url, rows) == before
    where = _inspect(empty_database_url, homes)
    assert {where[s] for s, *_ in before[:15]} == {"change_events_legacy"}
    assert {where[s] for s, *_ in before[15:]} == {"change_events_default"}
    assert _inspect(empty_database_url, lambda c: c.execute(text(
        "SELECT relkind FROM pg_class WHERE relname = 'change_events'")).scalar_one()) == "p"

    def append(connection):
        tenant = connection.execute(text("SELECT id FROM tenants")).scalar_one()
        sequence = connection.execute(text(
            "INSERT INTO change_events (tenant_id, mailbox_id, email_address, event_type) "
            "VALUES (:t, gen_random_uuid(), 'a@x.com', 'MESSAGE_ADDED') RETURNING sequence, tableoid::regclass::text"),
            {"t": tenant}).one()
        connection.commit()
        return tuple(sequence)

    sequence, home = _inspect(empty_database_url, append)
    assert sequence > before[-1][0]
    assert home == "change_events_legacy"  # today's rows stay in it until the day ends
    downgrade(empty_database_url, "0008")
    after = _inspect(empty_database_url, rows)
    assert after[:-1] == before and after[-1][0] == sequence
    assert _inspect(empty_database_url, lambda c: c.execute(text(
        "SELECT relkind FROM pg_class WHERE relname = 'change_events'")).scalar_one()) == "r"
    # and up again: the identity continues after everything copied back
    upgrade(empty_database_url)
    assert _inspect(empty_database_url, append)[0] > sequence


def _v1(fernet, document: dict) -> bytes:
    """A whole credential sealed as before 0017 (format 1)."""
    return fernet.encrypt(json.dumps({"v": 1, **document}, separators=(",", ":")).encode())


def test_credentials_become_one_sealed_row_per_tenant_and_key_and_back(empty_database_url, monkeypatch):
    """0017 deduplicates by the decrypted key (every v1 ciphertext differs: Fernet's random IV),
    per tenant; keeps each mailbox's own part; drops a STOPPED mailbox's secret; keeps an
    undecryptable ciphertext as it is; refuses without keys; and the downgrade re-seals each
    mailbox's whole credential."""
    from cryptography.fernet import Fernet

    from mailwatch.domain.models import CredentialKind, OAuthCredential, SealedCredential, ServiceAccountCredential
    from mailwatch.secrets import SecretBox

    key = generate_key()
    fernet = Fernet(key)
    info = {"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": "PEM",
            "project_id": "p"}
    upgrade(empty_database_url, "0016")

    def seed(connection):
        def tenant(name):
            return connection.execute(text("INSERT INTO tenants (name) VALUES (:n) RETURNING id"), {"n": name}).scalar_one()

        def mailbox(tenant_id, email, kind, ciphertext, state="ACTIVE"):
            connection.execute(text(
                "INSERT INTO mailboxes (tenant_id, email_address, gmail_address, state, credential_kind, "
                "credentials_ciphertext) VALUES (:t, :e, :e, :s, :k, :c)"),
                {"t": tenant_id, "e": email, "s": state, "k": kind, "c": ciphertext})

        a, b = tenant("a"), tenant("b")
        for email, subject in [("u1@x.com", "u1@x.com"), ("u2@x.com", "U2@X.com"), ("alias@x.com", "primary@x.com")]:
            mailbox(a, email, "SERVICE_ACCOUNT", _v1(fernet, {"kind": "SERVICE_ACCOUNT", "info": info, "subject": subject}))
        mailbox(a, "gone@x.com", "SERVICE_ACCOUNT",
                _v1(fernet, {"kind": "SERVICE_ACCOUNT", "info": info, "subject": "gone@x.com"}), state="STOPPED")
        mailbox(a, "o@x.com", "OAUTH", _v1(fernet, {"kind": "OAUTH", "client_id": "cid", "client_secret": "cs",
                                                     "refresh_token": "rt-o"}))
        mailbox(a, "lost@x.com", "OAUTH", b"sealed-with-a-key-long-gone")
        mailbox(b, "u1@x.com", "SERVICE_ACCOUNT",
                _v1(fernet, {"kind": "SERVICE_ACCOUNT", "info": info, "subject": "u1@x.com"}))
        connection.execute(text(
            "INSERT INTO tenant_google_settings (tenant_id, project_id, credential_kind, credentials_ciphertext, "
            "credential_id, pubsub_topic) VALUES (:t, 'p', 'SERVICE_ACCOUNT', :c, 'sa@p', 'projects/p/topics/t')"),
            {"t": a, "c": _v1(fernet, {"kind": "SERVICE_ACCOUNT", "info": info, "subject": ""})})
        connection.commit()
        return a, b

    a, b = _inspect(empty_database_url, seed)
    monkeypatch.delenv("MAILWATCH_SECRET_KEYS", raising=False)
    with pytest.raises(RuntimeError, match="MAILWATCH_SECRET_KEYS"):
        upgrade(empty_database_url)
    assert current(empty_database_url) == "0016"  # one transaction: nothing half done

    upgrade(empty_database_url, secret_keys=[key])

    def state(connection):
        rows = connection.execute(text(
            "SELECT m.tenant_id, m.email_address, m.credential_kind, m.sealed_credential_id, m.subject, "
            "m.refresh_token_ciphertext, s.kind, s.digest, s.ciphertext FROM mailboxes m "
            "LEFT JOIN sealed_credentials s ON s.id = m.sealed_credential_id")).all()
        sealed = connection.execute(text("SELECT tenant_id, count(*) FROM sealed_credentials GROUP BY 1")).all()
        settings = connection.execute(text("SELECT sealed_credential_id FROM tenant_google_settings")).scalar_one()
        return {(row.tenant_id, row.email_address): row for row in rows}, dict(sealed), settings

    rows, sealed_counts, settings_row = _inspect(empty_database_url, state)
    assert sealed_counts == {a: 3, b: 1}  # a: the key, the OAuth client, the undecryptable one; b: its own copy
    key_row = rows[(a, "u1@x.com")].sealed_credential_id
    assert {rows[(a, e)].sealed_credential_id for e in ("u1@x.com", "u2@x.com", "alias@x.com")} == {key_row}
    assert settings_row == key_row and rows[(b, "u1@x.com")].sealed_credential_id != key_row
    assert rows[(a, "gone@x.com")].sealed_credential_id is None  # STOPPED: no secret kept
    assert [rows[(a, e)].subject for e in ("u1@x.com", "u2@x.com", "alias@x.com")] == [None, None, "primary@x.com"]

    box = SecretBox([key])

    def opened(row):
        return box.open(SealedCredential(row.sealed_credential_id, CredentialKind(row.kind), bytes(row.digest),
                                         bytes(row.ciphertext), row.subject or row.email_address,
                                         None if row.refresh_token_ciphertext is None
                                         else bytes(row.refresh_token_ciphertext)))

    assert opened(rows[(a, "alias@x.com")]) == ServiceAccountCredential(info=info, subject="primary@x.com")
    assert opened(rows[(b, "u1@x.com")]) == ServiceAccountCredential(info=info, subject="u1@x.com")
    assert opened(rows[(a, "o@x.com")]) == OAuthCredential("cid", "cs", "rt-o")
    assert bytes(rows[(a, "lost@x.com")].ciphertext) == b"sealed-with-a-key-long-gone"
    assert box.seal_shared(ServiceAccountCredential(info=info, subject="x")).digest == bytes(rows[(a, "u1@x.com")].digest)

    downgrade(empty_database_url, "0016", secret_keys=[key])

    def whole(connection):
        return {(row[0], row[1]): bytes(row[2]) for row in connection.execute(text(
            "SELECT tenant_id, email_address, credentials_ciphertext FROM mailboxes"))}

    back = _inspect(empty_database_url, whole)

    def document(ciphertext):
        return json.loads(fernet.decrypt(ciphertext))

    assert document(back[(a, "alias@x.com")]) == {"v": 1, "kind": "SERVICE_ACCOUNT", "info": info,
                                                   "subject": "primary@x.com"}
    assert document(back[(a, "o@x.com")]) == {"v": 1, "kind": "OAUTH", "client_id": "cid", "client_secret": "cs",
                                               "refresh_token": "rt-o"}
    assert back[(a, "lost@x.com")] == b"sealed-with-a-key-long-gone" and back[(a, "gone@x.com")] == b""
    assert document(_inspect(empty_database_url, lambda c: bytes(c.execute(text(
        "SELECT credentials_ciphertext FROM tenant_google_settings")).scalar_one()))) == {
        "v": 1, "kind": "SERVICE_ACCOUNT", "info": info, "subject": ""}
