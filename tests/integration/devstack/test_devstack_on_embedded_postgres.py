"""The service against the embedded PostgreSQL: migrations, registration, sync and streams.

The functions imported below are the suite's own tests (which run against the
system's PostgreSQL 15 in their home folders); collected here, their database
fixtures resolve to this folder's embedded server (see conftest.py).
"""

from __future__ import annotations

import psycopg
import pytest

from mailwatch.database_url import libpq_url
from mailwatch_devstack.postgres import embedded_bindir, server_major_version
from tests.integration.api.test_api_stream_rpc import (  # noqa: F401 - collected here
    test_resume_from_a_cursor_continues_exactly_after_it,
)
from tests.integration.workers.test_worker_sync_pipeline import (  # noqa: F401 - collected here
    test_changes_reach_the_stream_in_history_order,
    test_expired_history_triggers_a_full_resync,
)
from tests.integration.api.test_api_register import (  # noqa: F401 - collected here
    test_register_is_idempotent_and_rewatches_only_on_change,
    test_register_with_service_account_watches_and_stores,
)
from tests.integration.store.test_store_migrations import (  # noqa: F401 - collected here
    test_migrations_build_exactly_the_declared_models,
    test_upgrade_from_empty_then_downgrade_to_base,
)

pytestmark = pytest.mark.integration


def test_these_tests_run_on_the_embedded_server(postgres_server, database_url):
    """The override took: the server is the wheel's PostgreSQL 18, not the system's."""
    assert postgres_server.version == server_major_version(embedded_bindir()) == 18
    url = libpq_url(database_url)
    with psycopg.connect(url) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    assert version >= 180000
