"""Migrations build exactly the declared schema, upgrade and downgrade cleanly,
and the server refuses an unmigrated database."""

from __future__ import annotations

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

pytestmark = pytest.mark.integration

TABLES = {"tenants", "api_keys", "mailboxes", "change_events", "malformed_notifications", "tenant_google_settings",
          "subscription_statuses", "gmail_budget_buckets", "tenant_limits", "mailbox_backfills",
          "backfill_messages"}


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
    upgrade(empty_database_url)
    assert _inspect(empty_database_url, errors) == [
        ("a@x.com", "GMAIL_RATE_LIMITED", "watch: Gmail answered 429: slow: down"),
        ("b@x.com", None, "connection reset by peer"),
        ("c@x.com", None, None),
    ]
    downgrade(empty_database_url, "0005")
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
