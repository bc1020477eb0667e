"""Ingest fixtures: a real migrated Postgres database and a real Pub/Sub emulator topic.

Mailboxes are inserted with SQL on the store's tables (the registration API
is someone else's); the emulator subscription has the shortest ack deadline
Pub/Sub allows (10 s) so redelivery tests finish quickly.
"""

from __future__ import annotations

import pytest
from tests.integration.ingest._ingest_support import Db, PubSub


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
