"""usage_limits over Postgres: a stream that ends while its replica's lease renewal is on the
way does not leave its lease behind (the renewal writes every lease it was given, so the
stream's delete may come first: the lease is deleted once more after the renewal); streams
opened with no limit count against a limit set later; a lease that lapsed (its replica could not
reach Postgres for a lease) is taken again under the tenant's limit, and its stream ends if
another stream took its slot meanwhile; a stream cancelled while its lease's COMMIT is in flight
leaves no lease behind; a burst of opens waiting for the tenant's lock holds one pooled
connection, and with no limit opens do not wait for each other."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from sqlalchemy import text

from mailwatch.config import LimitSettings
from mailwatch.domain.errors import TenantStreamLimit
from mailwatch.domain.models import TenantLimits
from mailwatch.store import create_engine, session_factory, stream_leases
from mailwatch.store.changes import tenant_lock_key
from mailwatch.store.db import autocommit
from mailwatch.store.usage_counts import SharedCounts
from mailwatch.usage_limits import UsageLimits
from tests.fixtures.factory import Rows
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

LEASE_SECONDS = 6.0  # renewed every 2 s; a lease written again would count for 6 s


class RenewalOvertaken(SharedCounts):
    """SharedCounts whose first renewal goes to Postgres only after a stream has ended and
    deleted its lease: the interleaving of a renewal overtaken by a stream's end."""

    def __init__(self, sessions) -> None:
        super().__init__(sessions)
        self.renewing = asyncio.Event()
        self.closed = asyncio.Event()
        self.closes = 0

    async def renew_streams(self, leases, lease_seconds):
        if not self.renewing.is_set():
            self.renewing.set()
            await self.closed.wait()
        return await super().renew_streams(leases, lease_seconds)

    async def close_stream(self, lease_id):
        await super().close_stream(lease_id)
        self.closes += 1
        self.closed.set()


class RenewalsHeld(SharedCounts):
    """SharedCounts whose renewals wait until `go` is set: what a test arranges between a lease
    lapsing and the replica's next renewal is not overtaken by that renewal (every third of a
    lease), however slowly the machine runs the test's statements."""

    def __init__(self, sessions) -> None:
        super().__init__(sessions)
        self.go = asyncio.Event()

    async def renew_streams(self, leases, lease_seconds):
        await self.go.wait()
        return await super().renew_streams(leases, lease_seconds)


async def test_a_stream_ending_during_a_lease_renewal_leaves_no_lease(sessions):
    tenant = (await Rows(sessions).tenant()).id
    counts = RenewalOvertaken(sessions)
    limits = UsageLimits(LimitSettings(streams_per_tenant=1, stream_lease_seconds=LEASE_SECONDS), counts=counts)
    end = asyncio.Event()

    async def stream() -> None:
        async with limits.stream_slot(tenant):
            await end.wait()

    task = asyncio.create_task(stream())
    try:
        await asyncio.wait_for(counts.renewing.wait(), timeout=LEASE_SECONDS * 5)
        assert await stream_leases.held(sessions, tenant) == 1
        end.set()
        await task
        # The renewal wrote the ended stream's lease again; the replica deletes it once more (the
        # second close: without it the row would stay until it lapsed, and no close would follow).
        await eventually(lambda: counts.closes == 2, interval=0.01, what="the lease deleted again after the renewal")
        assert await stream_leases.held(sessions, tenant) == 0
    finally:
        end.set()
        await asyncio.gather(task, return_exceptions=True)
        await limits.close()


async def test_streams_opened_with_no_limit_count_when_a_limit_is_set(sessions):
    tenant = (await Rows(sessions).tenant()).id
    own = {tenant: TenantLimits(streams=0)}

    async def lookup(tenant_id):
        return own[tenant_id]

    # Two replicas: three streams open on the first while the tenant has no limit.
    first = UsageLimits(LimitSettings(stream_lease_seconds=LEASE_SECONDS), lookup, counts=SharedCounts(sessions))
    second = UsageLimits(LimitSettings(stream_lease_seconds=LEASE_SECONDS), lookup, counts=SharedCounts(sessions))
    try:
        async with first.stream_slot(tenant), first.stream_slot(tenant), first.stream_slot(tenant):
            assert await stream_leases.held(sessions, tenant) == 3
            own[tenant] = TenantLimits(streams=1)  # the operator's SetTenantLimits
            first.forget(tenant)
            second.forget(tenant)
            for replica in (first, second):
                with pytest.raises(TenantStreamLimit):
                    async with replica.stream_slot(tenant):
                        pass
        assert await stream_leases.held(sessions, tenant) == 0
        async with second.stream_slot(tenant):
            assert await stream_leases.held(sessions, tenant) == 1
    finally:
        await first.close()
        await second.close()


async def _lapse(sessions, tenant) -> None:
    """The tenant's leases run out, as when their replica could not reach Postgres for a lease."""
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE tenant_stream_leases SET expires = now() - interval '1 second' "
                                   "WHERE tenant_id = :t"), {"t": tenant})


async def test_a_lapsed_lease_whose_slot_was_taken_meanwhile_ends_its_stream_and_keeps_the_limit(sessions):
    tenant = (await Rows(sessions).tenant()).id
    settings = LimitSettings(streams_per_tenant=1, stream_lease_seconds=LEASE_SECONDS)
    held = RenewalsHeld(sessions)
    first = UsageLimits(settings, counts=held)
    second = UsageLimits(settings, counts=SharedCounts(sessions))
    opened, end = asyncio.Event(), asyncio.Event()

    async def stream(replica: UsageLimits) -> None:
        async with replica.stream_slot(tenant):
            opened.set()
            await end.wait()

    lapsed = asyncio.create_task(stream(first))
    taker = None
    try:
        await asyncio.wait_for(opened.wait(), timeout=30)
        await _lapse(sessions, tenant)
        # The second replica sees no stream held and takes the tenant's one slot.
        opened.clear()
        taker = asyncio.create_task(stream(second))
        await asyncio.wait_for(opened.wait(), timeout=30)
        # The first replica's next renewal finds its lease lapsed and the slot taken: its stream
        # ends, refused as a new one would be; the tenant holds one stream, not two.
        held.go.set()
        await eventually(lambda: lapsed.done(), timeout=LEASE_SECONDS * 5, what="the lapsed stream ended")
        with pytest.raises(TenantStreamLimit, match="lapsed"):
            lapsed.result()
        assert first.open_streams(tenant) == 0 and not taker.done()
        assert await stream_leases.held(sessions, tenant) == 1
    finally:
        end.set()
        await asyncio.gather(lapsed, *([taker] if taker else []), return_exceptions=True)
        await first.close()
        await second.close()


async def test_a_lapsed_lease_with_its_slot_still_free_is_taken_again_and_its_stream_goes_on(sessions):
    tenant = (await Rows(sessions).tenant()).id
    counts = RenewalsHeld(sessions)
    limits = UsageLimits(LimitSettings(streams_per_tenant=1, stream_lease_seconds=LEASE_SECONDS), counts=counts)
    opened, end = asyncio.Event(), asyncio.Event()

    async def stream() -> None:
        async with limits.stream_slot(tenant):
            opened.set()
            await end.wait()

    task = asyncio.create_task(stream())
    try:
        await asyncio.wait_for(opened.wait(), timeout=30)
        await _lapse(sessions, tenant)
        assert await stream_leases.held(sessions, tenant) == 0
        counts.go.set()
        await eventually(lambda: _held(sessions, tenant, 1), timeout=LEASE_SECONDS * 5, what="the lease taken again")
        assert not task.done()
    finally:
        end.set()
        await asyncio.gather(task, return_exceptions=True)
        await limits.close()


async def _held(sessions, tenant, expected: int) -> bool:
    return await stream_leases.held(sessions, tenant) == expected


GATE, CANCELLED = 7_001, 7_002  # advisory lock keys of the commit gate below

# At COMMIT (a deferred constraint trigger) a new lease waits for the test's GATE lock and shrugs
# off Postgres's query cancel, taking CANCELLED to say it got one: a COMMIT the caller's cancel
# came too late to stop, as when it was already past the point of no return.
_COMMIT_GATE = [
    f"""
    CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        LOOP
            BEGIN
                PERFORM pg_advisory_xact_lock({GATE});
                RETURN NULL;
            EXCEPTION WHEN query_canceled THEN
                PERFORM pg_advisory_xact_lock({CANCELLED});
            END;
        END LOOP;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON tenant_stream_leases
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate()
    """,
]


async def _lock_waits(sessions, key: int, granted: bool) -> bool:
    async with sessions() as session:
        return bool((await session.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = :key "
            "AND objsubid = 1 AND granted = :granted AND pid <> pg_backend_pid()"), {"key": key, "granted": granted})).scalar_one())


async def test_a_stream_cancelled_while_its_leases_commit_is_in_flight_leaves_no_lease(engine, sessions):
    tenant = (await Rows(sessions).tenant()).id
    async with sessions() as session, session.begin():
        for statement in _COMMIT_GATE:
            await session.execute(text(statement))
    limits = UsageLimits(LimitSettings(streams_per_tenant=1), counts=SharedCounts(sessions))
    async with engine.connect() as gate:
        await gate.execute(text("SELECT pg_advisory_lock(:k)"), {"k": GATE})
        await gate.commit()

        async def stream() -> None:
            async with limits.stream_slot(tenant):
                pytest.fail("the stream was cancelled before its lease was taken")

        task = asyncio.create_task(stream())
        try:
            await eventually(lambda: _lock_waits(sessions, GATE, granted=False), what="the lease's COMMIT waiting")
            task.cancel()  # the caller goes away: psycopg sends Postgres a cancel and waits for the outcome
            await eventually(lambda: _lock_waits(sessions, CANCELLED, granted=True), what="the cancel at Postgres")
            await gate.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": GATE})
            await gate.commit()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The COMMIT landed after the cancel; the stream's end took the lease back.
            assert await stream_leases.held(sessions, tenant) == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await limits.close()


async def _hold_tenants_lease_lock(database_url: str, tenant, *, shared: bool) -> psycopg.AsyncConnection:
    """A connection outside every pool holding the tenant's stream-lease lock (as an open in
    flight on another replica would), released when it closes."""
    holder = await psycopg.AsyncConnection.connect(database_url.replace("+psycopg", ""), autocommit=True)
    lock = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
    await holder.execute(f"SELECT {lock}(CAST(%s AS int4), CAST(%s AS int4))",
                         (stream_leases.STREAM_LEASE_LOCK_CLASS, tenant_lock_key(tenant)))
    return holder


async def test_a_burst_of_opens_waiting_for_the_tenants_lock_leaves_the_pool_to_everyone_else(database_url):
    """Opens under a limit queue on the tenant's lock in Postgres; a thousand streams
    reconnecting at once to one replica must not each hold a pooled connection while they
    wait there, or every other call of that replica finds the pool empty (and failed after
    the pool's timeout). They take turns before the pool: one connection waits."""
    engine = create_engine(database_url, pool_size=2, max_overflow=0, pool_timeout=5)
    sessions = session_factory(engine)
    counts = SharedCounts(sessions)
    tenant = (await Rows(sessions).tenant()).id
    holder = await _hold_tenants_lease_lock(database_url, tenant, shared=False)
    opens = [asyncio.create_task(counts.open_stream(tenant, uuid.uuid4(), 3, 30)) for _ in range(5)]
    try:
        async def one_open_waits_for_the_lock() -> bool:
            waiting = await (await holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).fetchone()
            return waiting[0] >= 1
        await eventually(one_open_waits_for_the_lock, what="an open waiting for the tenant's lock")
        # Without the turns, both pooled connections wait for the lock and this times out.
        async with autocommit(sessions) as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        await holder.close()
        assert sorted(await asyncio.gather(*opens)) == [False, False, True, True, True]
        assert await stream_leases.held(sessions, tenant) == 3
    finally:
        for task in opens:
            task.cancel()
        await asyncio.gather(*opens, return_exceptions=True)
        await holder.close()
        await engine.dispose()


async def test_with_no_limit_an_open_does_not_wait_for_another_in_flight(sessions, database_url):
    """With no limit nothing is counted: an open takes the tenant's lock shared, so it does not
    wait for another replica's open still in flight (which holds it shared too)."""
    tenant = (await Rows(sessions).tenant()).id
    holder = await _hold_tenants_lease_lock(database_url, tenant, shared=True)
    try:
        # Exclusive, it would wait for the holder for good.
        assert await asyncio.wait_for(SharedCounts(sessions).open_stream(tenant, uuid.uuid4(), 0, 30), 60)
        assert await stream_leases.held(sessions, tenant) == 1
    finally:
        await holder.close()


async def _delete_waits_for_a_row_lock(sessions) -> bool:
    async with sessions() as session:
        return bool((await session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'DELETE FROM tenant_stream_leases%'"))).scalar_one())


async def test_closing_waits_for_a_lease_still_being_given_back_by_a_stream_cancelled_again(
        engine, sessions, database_url):
    """A stream cancelled while its lease's delete is on its way (a server's stop after its
    grace, on a call already ending) stops waiting for the delete; `close` waits for it, so its
    pooled connection is back before the engine is disposed (not left checked out when the event
    loop ends and cancels the delete, for the garbage collector to find)."""
    tenant = (await Rows(sessions).tenant()).id
    # Leases long enough that no renewal runs during the test.
    limits = UsageLimits(LimitSettings(streams_per_tenant=1, stream_lease_seconds=600), counts=SharedCounts(sessions))
    end = asyncio.Event()

    async def stream() -> None:
        async with limits.stream_slot(tenant):
            await end.wait()

    task = asyncio.create_task(stream())
    # The lease's row held by another transaction: the stream's delete waits for it.
    holder = await psycopg.AsyncConnection.connect(database_url.replace("+psycopg", ""))
    try:
        await eventually(lambda: stream_leases.held(sessions, tenant), what="the stream's lease")
        await holder.execute("SELECT 1 FROM tenant_stream_leases WHERE tenant_id = %s FOR UPDATE", (tenant,))
        end.set()
        await eventually(lambda: _delete_waits_for_a_row_lock(sessions), what="the lease's delete waiting")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        checked_out_when_closed = []
        closing = asyncio.create_task(limits.close())
        closing.add_done_callback(lambda _: checked_out_when_closed.append(engine.pool.checkedout()))
        # A round trip while the delete still waits: a `close` that does not wait for it is done by then.
        await holder.execute("SELECT 1")
        await holder.commit()  # the delete goes on
        await closing
        assert checked_out_when_closed == [0]
        assert await stream_leases.held(sessions, tenant) == 0
    finally:
        await holder.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await limits.close()
