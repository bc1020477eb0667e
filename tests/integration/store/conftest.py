"""Store fixtures: a migrated database per test, cloned from a template that
`mailwatch.store.migrate.upgrade` built once (the same trick as the suite's
`database_url`, but without going through the CLI)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from mailwatch.store import create_engine, session_factory
from mailwatch.store.migrate import upgrade


@pytest.fixture(scope="session")
def store_template(postgres_server):
    name = f"store_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(postgres_server.url(name))
    return name


@pytest.fixture
def migrated_url(postgres_server, store_template):
    name = f"store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        # FILE_COPY clones a small database about twice as fast as PG15's default WAL_LOG.
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{store_template}" STRATEGY FILE_COPY')
    try:
        yield postgres_server.url(name, driver="postgresql+psycopg")
    finally:
        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(migrated_url):
    engine = create_engine(migrated_url, pool_size=5, max_overflow=5)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)
