"""Ingest fixtures: a real migrated Postgres database and a real Pub/Sub emulator topic.

Mailboxes are inserted with SQL on the store's tables (the registration API
is someone else's); the emulator subscription has the shortest ack deadline
Pub/Sub allows (10 s) so redelivery tests finish quickly.
"""

from __future__ import annotations

import pytest
from tests.integration.ingest._ingest_support import Db, PubSub

from mailwatch.store import create_engine, session_factory


@pytest.fixture
async def engine(database_url):
    engine = create_engine(database_url, pool_size=4, max_overflow=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def db(sessions) -> Db:
    return Db(sessions)


@pytest.fixture
def pubsub(pubsub_emulator, pubsub_names):
    bus = PubSub(pubsub_names)
    try:
        yield bus
    finally:
        bus.close()
