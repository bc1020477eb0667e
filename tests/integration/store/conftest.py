"""Store fixtures on top of the suite's `database_url` (a fresh database cloned
from a template that `mailwatch migrate` built once)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mailwatch.store import create_engine, session_factory, sync_claims
from tests.fixtures.factory import Rows
from tests.fixtures.waiting import eventually


@pytest.fixture
def migrated_url(database_url):
    return database_url


@pytest.fixture
async def other_sessions(database_url):
    """A second replica's connections to the same database."""
    engine = create_engine(database_url, pool_size=2, max_overflow=2)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def claimed_by_sync(sessions, address: str, *, owner: str, now, lease):
    """A new tenant with one mailbox (`address`, history 100) that `owner`'s sync claim holds;
    (tenant, the claimed mailbox)."""
    rows = Rows(sessions)
    tenant = await rows.tenant()
    await rows.mailbox(tenant.id, address, history_id=100)
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET sync_due_at = :now WHERE email_address = :address"),
                              {"now": now, "address": address})
        [claim] = await sync_claims.claim_due_syncs(session, owner=owner, now=now, lease=lease, limit=10)
    return tenant, claim.mailbox


async def blocked_on_a_lock(sessions) -> None:
    """Until a statement in this test's database waits for a lock another transaction holds
    (a row lock or an advisory lock: pg_stat_activity says so)."""

    async def waiting() -> bool:
        async with sessions() as session:
            count = await session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ))
        return count > 0

    await eventually(waiting, what="a statement waits for a lock")
