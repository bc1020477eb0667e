"""Store fixtures on top of the suite's `database_url` (a fresh database cloned
from a template that `mailwatch migrate` built once)."""

from __future__ import annotations

import pytest

from mailwatch.store import create_engine, session_factory


@pytest.fixture
def migrated_url(database_url):
    return database_url


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
