"""The shared counts of tenants' limits in Postgres: token buckets (store/usage_buckets.py) and
stream leases (store/stream_leases.py), taken from two engines at once as two replicas do."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from mailwatch.store import stream_leases, usage_buckets
from tests.fixtures.factory import Rows

pytestmark = pytest.mark.integration


async def _age(sessions, table: str, column: str, seconds: float) -> None:
    """Move every row's `column` of `table` back by `seconds` (time passing, without waiting)."""
    async with sessions() as session, session.begin():
        await session.execute(text(f"UPDATE {table} SET {column} = {column} - make_interval(secs => :s)"),
                              {"s": seconds})


async def test_a_bucket_takes_all_or_nothing_or_down_to_a_minimum_and_refills_by_postgres_clock(sessions):
    tenant = (await Rows(sessions).tenant()).id

    async def take(bucket: str, amount: int, **kwargs) -> tuple[int, float]:
        # 0.01 a second: the seconds this test's statements take refill next to nothing.
        return await usage_buckets.take(sessions, tenant, bucket, amount, 0.01, 5.0, **kwargs)

    taken, left = await take("b", 3)
    assert taken == 3 and left == pytest.approx(2.0, abs=0.1)  # a new bucket starts full
    taken, left = await take("b", 3)
    assert taken == 0 and left == pytest.approx(2.0, abs=0.1)  # all or nothing: a refusal takes none
    taken, left = await take("b", 3, minimum=1)
    assert taken == 2 and left == pytest.approx(0.0, abs=0.1)  # what whole tokens there are
    assert (await take("b", 3, minimum=1))[0] == 0
    await _age(sessions, "usage_buckets", "updated", 250)  # 2.5 tokens back
    taken, left = await take("b", 2)
    assert taken == 2 and left == pytest.approx(0.5, abs=0.1)
    await _age(sessions, "usage_buckets", "updated", 360_000)
    taken, left = await take("b", 1)
    assert taken == 1 and left == pytest.approx(4.0, abs=0.1)  # never above capacity
    # Another bucket, another tenant: their own.
    assert (await take("other", 5))[0] == 5
    assert (await usage_buckets.take(sessions, (await Rows(sessions).tenant()).id, "b", 5, 0.01, 5.0))[0] == 5


async def test_idle_buckets_are_pruned_and_come_back_full(sessions):
    tenant = (await Rows(sessions).tenant()).id
    assert (await usage_buckets.take(sessions, tenant, "rpc:revoked", 5, 5.0, 5.0))[0] == 5  # emptied
    assert (await usage_buckets.take(sessions, tenant, "registrations", 1, 1.0, 60.0))[0] == 1
    await _age(sessions, "usage_buckets", "updated", 7200)
    assert (await usage_buckets.take(sessions, tenant, "registrations", 1, 1.0, 60.0))[0] == 1  # in use again
    assert await usage_buckets.prune_idle(sessions, idle_for=timedelta(hours=1)) == 1
    async with sessions() as session:
        assert (await session.execute(text("SELECT bucket FROM usage_buckets"))).scalars().all() == ["registrations"]
    # Gone is as good as full: the next take finds the whole capacity.
    taken, left = await usage_buckets.take(sessions, tenant, "rpc:revoked", 5, 5.0, 5.0)
    assert (taken, left) == (5, pytest.approx(0.0, abs=0.1))


async def test_two_replicas_racing_for_one_bucket_never_take_more_than_it_holds(sessions, other_sessions):
    tenant = (await Rows(sessions).tenant()).id
    # 0.001 a second: the refill during the race is far below one token.
    results = await asyncio.gather(*(
        usage_buckets.take(replica, tenant, "race", 1, 0.001, 40.0)
        for _ in range(50) for replica in (sessions, other_sessions)))
    assert sum(taken for taken, _ in results) == 40


async def test_a_tenants_streams_are_its_unexpired_leases_and_two_replicas_cannot_both_take_its_last(
    sessions, other_sessions
):
    rows = Rows(sessions)
    tenant, other = (await rows.tenant()).id, (await rows.tenant()).id
    opened = await asyncio.gather(*(
        stream_leases.open_lease(replica, tenant, uuid.uuid4(), 3, 30.0)
        for _ in range(10) for replica in (sessions, other_sessions)))
    assert sum(opened) == 3 and await stream_leases.held(sessions, tenant) == 3
    assert await stream_leases.open_lease(sessions, other, uuid.uuid4(), 1, 30.0)  # another tenant's own

    # Every lease lapses (its replica died): they stop counting, and the next open deletes them.
    await _age(sessions, "tenant_stream_leases", "expires", 31)
    assert await stream_leases.held(sessions, tenant) == 0
    kept = uuid.uuid4()
    assert await stream_leases.open_lease(other_sessions, tenant, kept, 1, 30.0)
    async with sessions() as session:
        left = (await session.execute(text("SELECT count(*) FROM tenant_stream_leases WHERE tenant_id = :t"),
                                      {"t": tenant})).scalar_one()
    assert left == 1
    assert not await stream_leases.open_lease(sessions, tenant, uuid.uuid4(), 1, 30.0)
    await stream_leases.close_lease(sessions, kept)
    assert await stream_leases.held(sessions, tenant) == 0


async def test_renewing_pushes_unexpired_leases_on_and_returns_the_lapsed_ones_but_not_a_deleted_tenants(sessions):
    rows = Rows(sessions)
    tenant, gone = (await rows.tenant()).id, (await rows.tenant()).id
    live, expired, deleted, orphan = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await stream_leases.open_lease(sessions, tenant, live, 5, 30.0)
    assert await stream_leases.open_lease(sessions, tenant, expired, 5, 30.0)
    assert await stream_leases.open_lease(sessions, gone, orphan, 5, 30.0)
    await _age(sessions, "tenant_stream_leases", "expires", 25)  # 5 s left
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": gone})
        await session.execute(text("UPDATE tenant_stream_leases SET expires = now() WHERE id = :id"),
                              {"id": expired})

    # `deleted` was deleted by another replica while its stream's replica could not reach Postgres;
    # `expired` ran out and is still there. Neither counts now, and neither is pushed on: they are
    # returned, to be taken again under the tenant's limit.
    lapsed = await stream_leases.renew(sessions, {live: tenant, expired: tenant, deleted: tenant, orphan: gone}, 30.0)
    assert lapsed == {expired, deleted}
    async with sessions() as session:
        rows_now = dict((await session.execute(text(
            "SELECT id, extract(epoch FROM expires - now()) FROM tenant_stream_leases"))).all())
    assert set(rows_now) == {live, expired}
    assert 29 < rows_now[live] <= 30 and rows_now[expired] <= 0, rows_now
    assert await stream_leases.held(sessions, tenant) == 1

    # Taken again like a new stream's lease (the expired row's own id reused), up to the limit.
    assert await stream_leases.open_lease(sessions, tenant, expired, 2, 30.0)
    assert not await stream_leases.open_lease(sessions, tenant, deleted, 2, 30.0)
    assert await stream_leases.held(sessions, tenant) == 2
