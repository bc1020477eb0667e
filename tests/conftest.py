"""Shared test world: a throwaway Postgres cluster and the Pub/Sub emulator.

Both are suite-scoped (start-up costs seconds) and stopped by their own
process id at the end of the run; each test gets clean state on top of them
(a fresh database, fresh topic and subscription names).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid

import psycopg
import pytest

from mailwatch.database_url import sqlalchemy_url
from mailwatch_devstack.postgres import TemporaryPostgres, ram_directory
from mailwatch_devstack.pubsub_emulator import PubSubEmulator
from tests.fixtures.names import TEST_PROJECT

pytest_plugins = [
    "tests.fixtures.peers", "tests.fixtures.factory", "tests.fixtures.service",
    # the image build a pytest-xdist controller starts for its workers
    "tests.deploy.xdist_build",
]


@pytest.fixture(scope="session")
def postgres_server():
    # In RAM when the machine allows: every test's CREATE and DROP DATABASE skip the disk.
    server = TemporaryPostgres(parent=ram_directory()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pubsub_emulator():
    emulator = PubSubEmulator().start()
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    # google-cloud-pubsub reads this when a client is built; every client in
    # the test process (and any child process) must talk to the emulator.
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        emulator.stop()


_database_counter = itertools.count()


@contextlib.contextmanager
def _throwaway_database(server, prefix: str, template: str | None = None):
    """CREATE a uniquely named database (optionally cloned from `template`), DROP it afterwards."""
    name = f"{prefix}_{next(_database_counter)}_{uuid.uuid4().hex[:8]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield sqlalchemy_url(server.url(name))
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(postgres_server, migrated_template):
    """A fresh, migrated database for this test only (SQLAlchemy psycopg URL)."""
    with _throwaway_database(postgres_server, "test", migrated_template) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(postgres_server, migrated_template):
    """A fresh, migrated database shared by one module's tests (for processes that only look at it)."""
    with _throwaway_database(postgres_server, "module", migrated_template) as url:
        yield url


@pytest.fixture
def empty_database_url(postgres_server):
    """A fresh database with no schema at all (for migration tests)."""
    with _throwaway_database(postgres_server, "empty") as url:
        yield url


@pytest.fixture
def pubsub_names(pubsub_emulator):
    """Unique project/topic/subscription names for this test."""
    suffix = uuid.uuid4().hex[:10]
    project = TEST_PROJECT
    return {
        "project": project,
        "topic": f"projects/{project}/topics/gmail-{suffix}",
        "subscription": f"projects/{project}/subscriptions/mailwatch-{suffix}",
    }
