"""benchmarks/hot_statements.py on a real Postgres: every way (psycopg as the service runs
it, asyncpg on each kind of pool) runs every hot statement for real, so each change it
measures is recorded, claimed, committed with its event and read back."""

from __future__ import annotations

import psycopg
import pytest

from benchmarks.hot_statements import STATEMENTS, measure
from mailwatch.database_url import libpq_url

pytestmark = pytest.mark.integration

WAYS = {"psycopg", "psycopg bare", "asyncpg driver", "asyncpg pool", "asyncpg pool*", "asyncpg bare"}


async def test_every_way_runs_every_statement_and_each_change_lands(database_url):
    runs = [figures async for figures in measure(database_url, cycles=3, block=2, runs=1, mailboxes=4, warmup=1)]

    [figures] = runs
    assert set(figures) == WAYS
    for way, per in figures.items():
        assert set(per) == set(STATEMENTS), way
        assert all(cpu > 0 for cpu in per.values()), way
    with psycopg.connect(libpq_url(database_url)) as conn:
        events = conn.execute("SELECT count(*) FROM change_events").fetchone()[0]
        synced = conn.execute("SELECT sum(history_id - 100) / 10 FROM mailboxes").fetchone()[0]
        leased = conn.execute("SELECT count(*) FROM mailboxes WHERE lease_owner IS NOT NULL").fetchone()[0]
        due = conn.execute("SELECT count(*) FROM mailboxes WHERE sync_due_at IS NOT NULL").fetchone()[0]
    changes = len(WAYS) * (1 + 3)  # a warm-up cycle and three measured ones per way
    assert events == changes
    assert synced == changes  # each final page moved its mailbox 10 history ids on
    assert (leased, due) == (0, 0)  # and released its claim, caught up
