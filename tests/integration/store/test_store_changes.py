"""The change log: append/read, per-tenant commit order, NOTIFY, retention."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import text

from mailwatch.database_url import libpq_url
from mailwatch.domain.errors import NotFound
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes, tenants
from mailwatch.store.changes import CHANGES_CHANNEL

from .conftest import blocked_on_a_lock

pytestmark = pytest.mark.integration


def _events(mailbox_id, n, *, type=EventType.MESSAGE_ADDED, start=1, **kw):
    return [
        NewEvent(
            mailbox_id=mailbox_id,
            email_address="alice@example.com",
            type=type,
            history_id=start + i,
            message_id=f"m{start + i}",
            thread_id=f"t{start + i}",
            label_ids=("INBOX", "UNREAD"),
            **kw,
        )
        for i in range(n)
    ]


@pytest.fixture
async def tenant(sessions):
    async with sessions() as session, session.begin():
        return await tenants.create_tenant(session, "acme")


async def test_append_then_read_in_order(sessions, tenant):
    mailbox = uuid.uuid4()
    async with sessions() as session, session.begin():
        appended = await changes.append_events(
            session, tenant.id, _events(mailbox, 3) + [
                NewEvent(mailbox_id=mailbox, email_address="alice@example.com", type=EventType.RESYNCED,
                         history_id=9, detail={"baseline": "9", "reason": "history expired"}),
            ]
        )
    sequences = [e.sequence for e in appended]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4
    assert [e.history_id for e in appended] == [1, 2, 3, 9]
    assert appended[0].observed_at.tzinfo is not None

    async with sessions() as session:
        read = await changes.read_events(session, tenant.id, 0)
        assert read == appended
        assert read[-1].detail == {"baseline": "9", "reason": "history expired"}
        assert read[0].label_ids == ("INBOX", "UNREAD")
        assert await changes.read_events(session, tenant.id, sequences[1]) == appended[2:]
        assert await changes.read_events(session, tenant.id, 0, limit=2) == appended[:2]
        assert await changes.latest_sequence(session, tenant.id) == sequences[-1]


async def test_empty_append_is_a_no_op(sessions, tenant):
    async with sessions() as session, session.begin():
        assert await changes.append_events(session, tenant.id, []) == []
    async with sessions() as session:
        assert await changes.latest_sequence(session, tenant.id) == 0
        assert await changes.latest_sequence(session, uuid.uuid4()) == 0


async def test_read_filters_by_mailbox_and_type(sessions, tenant):
    one, two = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        await changes.append_events(session, tenant.id, _events(one, 2))
        await changes.append_events(session, tenant.id, _events(two, 2, type=EventType.LABELS_ADDED))
        await changes.append_events(session, tenant.id, _events(one, 1, type=EventType.MESSAGE_DELETED, start=10))
    async with sessions() as session:
        only_one = await changes.read_events(session, tenant.id, 0, mailbox_ids=[one])
        assert {e.mailbox_id for e in only_one} == {one} and len(only_one) == 3
        deleted = await changes.read_events(session, tenant.id, 0, types=[EventType.MESSAGE_DELETED])
        assert [e.message_id for e in deleted] == ["m10"]
        both = await changes.read_events(
            session, tenant.id, 0, mailbox_ids=[two], types=[EventType.LABELS_ADDED, EventType.MESSAGE_ADDED]
        )
        assert len(both) == 2 and {e.type for e in both} == {EventType.LABELS_ADDED}
        assert len(await changes.read_events(session, tenant.id, 0, mailbox_ids=[], types=[])) == 5


async def test_tenants_do_not_see_each_others_events(sessions, tenant):
    async with sessions() as session, session.begin():
        other = await tenants.create_tenant(session, "other")
        await changes.append_events(session, tenant.id, _events(uuid.uuid4(), 2))
    async with sessions() as session:
        assert await changes.read_events(session, other.id, 0) == []
        assert await changes.latest_sequence(session, other.id) == 0


async def _blocked_writer(sessions, tenant, events) -> asyncio.Task:
    """A second writer of the tenant's log, started while the test holds the tenant's lock."""

    async def write():
        async with sessions() as session, session.begin():
            return await changes.append_events(session, tenant.id, events)

    writer = asyncio.create_task(write())
    await blocked_on_a_lock(sessions)
    assert not writer.done(), "the second writer must wait for the tenant's lock"
    return writer


async def test_a_blocked_writer_draws_its_sequences_after_the_first_commits(sessions, tenant):
    mailbox = uuid.uuid4()
    first = sessions()
    await first.begin()
    first_events = await changes.append_events(first, tenant.id, _events(mailbox, 2))

    second = await _blocked_writer(sessions, tenant, _events(mailbox, 2, start=100))

    # A different tenant is not held up.
    async with sessions() as session, session.begin():
        other = await tenants.create_tenant(session, "independent")
        await asyncio.wait_for(changes.append_events(session, other.id, _events(mailbox, 1)), 5)

    await first.commit()
    await first.close()
    second_events = await asyncio.wait_for(second, 10)
    assert max(e.sequence for e in first_events) < min(e.sequence for e in second_events)


async def test_a_blocked_writer_draws_no_sequence_before_it_holds_the_lock(sessions, tenant):
    """The lock, the notify and the insert are one statement: the blocked writer
    must not draw its sequence numbers while it waits, or the first writer's next
    append (drawn later, committed first) would let a reader skip past them."""
    mailbox = uuid.uuid4()
    first = sessions()
    await first.begin()
    await changes.append_events(first, tenant.id, _events(mailbox, 1))

    second = await _blocked_writer(sessions, tenant, _events(mailbox, 3, start=100))
    later = await changes.append_events(first, tenant.id, _events(mailbox, 2, start=10))
    await first.commit()
    await first.close()
    second_events = await asyncio.wait_for(second, 10)
    assert max(e.sequence for e in later) < min(e.sequence for e in second_events)


async def test_concurrent_writers_never_let_a_reader_skip_an_event(sessions, tenant):
    """Readers that poll "after my last sequence" while many writers commit in
    random order must still end up having seen every event exactly once."""
    mailbox = uuid.uuid4()
    writers_done = asyncio.Event()
    rng = random.Random(7)

    async def writer(n: int):
        for batch in range(5):
            async with sessions() as session, session.begin():
                await changes.append_events(session, tenant.id, _events(mailbox, rng.randint(1, 4), start=n * 1000 + batch * 10))
                await asyncio.sleep(rng.random() * 0.01)  # hold the transaction open a little

    seen: list[int] = []

    async def reader():
        last = 0
        while True:
            done = writers_done.is_set()
            async with sessions() as session:
                page = await changes.read_events(session, tenant.id, last)
            seen.extend(e.sequence for e in page)
            if page:
                last = page[-1].sequence
            elif done:
                return
            await asyncio.sleep(0.002)  # a polling consumer's pace

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(6)))
    writers_done.set()
    await asyncio.wait_for(reading, 20)

    async with sessions() as session:
        everything = [e.sequence for e in await changes.read_events(session, tenant.id, 0, limit=10_000)]
    assert seen == everything
    assert len(everything) == len(set(everything)) > 30


async def _listen(postgres_server, database_url):
    dsn = libpq_url(database_url)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
    return conn


async def _notifications(conn, timeout):
    return [n.payload async for n in conn.notifies(timeout=timeout)]


async def test_notify_is_delivered_after_commit_only(sessions, tenant, postgres_server, migrated_url):
    listener = await _listen(postgres_server, migrated_url)
    try:
        # Rolled back: nothing is delivered.
        async with sessions() as session:
            async with session.begin():
                await changes.append_events(session, tenant.id, _events(uuid.uuid4(), 1))
                assert await _notifications(listener, 0.2) == []  # not before commit
                await session.rollback()
        assert await _notifications(listener, 0.3) == []

        async with sessions() as session, session.begin():
            await changes.append_events(session, tenant.id, _events(uuid.uuid4(), 3))
            await changes.append_events(session, tenant.id, _events(uuid.uuid4(), 1))
        # Postgres folds identical notifications of one transaction into one.
        assert await _notifications(listener, 0.5) == [str(tenant.id)]
    finally:
        await listener.close()


async def test_prune_deletes_old_events_and_raises_the_watermark(sessions, tenant):
    now = datetime.now(timezone.utc)
    mailbox = uuid.uuid4()
    async with sessions() as session, session.begin():
        other = await tenants.create_tenant(session, "other")
        old = await changes.append_events(session, tenant.id, _events(mailbox, 3, observed_at=now - timedelta(days=10)))
        recent = await changes.append_events(session, tenant.id, _events(mailbox, 2, observed_at=now))
        others = await changes.append_events(session, other.id, _events(mailbox, 2, observed_at=now))

    async with sessions() as session, session.begin():
        assert await changes.prune_events(session, now - timedelta(days=7)) == 3
    async with sessions() as session:
        assert (await tenants.get_tenant(session, tenant.id)).pruned_through_sequence == old[-1].sequence
        assert (await tenants.get_tenant(session, other.id)).pruned_through_sequence == 0
        assert await changes.read_events(session, tenant.id, 0) == recent
        assert await changes.read_events(session, other.id, 0) == others

    async with sessions() as session, session.begin():
        assert await changes.prune_events(session, now - timedelta(days=7)) == 0  # idempotent
        assert await changes.prune_events(session, now + timedelta(seconds=1)) == 4
    async with sessions() as session:
        assert (await tenants.get_tenant(session, tenant.id)).pruned_through_sequence == recent[-1].sequence
        assert (await tenants.get_tenant(session, other.id)).pruned_through_sequence == others[-1].sequence
        # An empty log still reports the position readers resume from.
        assert await changes.latest_sequence(session, tenant.id) == recent[-1].sequence


async def test_prune_cuts_by_sequence_so_the_watermark_is_exact(sessions, tenant):
    """An event with a later sequence but an earlier observed_at (a writer whose
    transaction started earlier) is pruned together with everything below it."""
    now = datetime.now(timezone.utc)
    mailbox = uuid.uuid4()
    async with sessions() as session, session.begin():
        newer_clock = await changes.append_events(session, tenant.id, _events(mailbox, 1, observed_at=now - timedelta(days=1)))
        older_clock = await changes.append_events(session, tenant.id, _events(mailbox, 1, observed_at=now - timedelta(days=9)))
    async with sessions() as session, session.begin():
        assert await changes.prune_events(session, now - timedelta(days=7)) == 2
    async with sessions() as session:
        assert (await tenants.get_tenant(session, tenant.id)).pruned_through_sequence == older_clock[0].sequence
        assert newer_clock[0].sequence < older_clock[0].sequence
        assert await changes.read_events(session, tenant.id, 0) == []


async def test_prune_requires_an_aware_datetime(sessions):
    async with sessions() as session:
        with pytest.raises(ValueError):
            await changes.prune_events(session, datetime(2030, 1, 1))


async def test_appending_thousands_is_fast_and_ordered(sessions, tenant):
    mailbox = uuid.uuid4()
    events = _events(mailbox, 5000)
    started = time.perf_counter()
    async with sessions() as session, session.begin():
        appended = await changes.append_events(session, tenant.id, events)
    elapsed = time.perf_counter() - started
    assert [e.history_id for e in appended] == list(range(1, 5001))
    sequences = [e.sequence for e in appended]
    assert sequences == sorted(sequences)
    async with sessions() as session:
        stored = await changes.read_events(session, tenant.id, 0, limit=10_000)
        count = (await session.execute(text("SELECT count(*) FROM change_events"))).scalar_one()
    assert [(e.sequence, e.history_id, e.id) for e in stored] == [(e.sequence, e.history_id, e.id) for e in appended]
    assert count == 5000
    assert elapsed < 5, f"appending 5000 events took {elapsed:.2f}s"


async def test_scan_moves_a_filtered_reader_past_rows_it_does_not_want(sessions, tenant):
    wanted, other = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        noise = await changes.append_events(session, tenant.id, _events(other, 5))
        hit = await changes.append_events(session, tenant.id, _events(wanted, 1, start=50))

    async with sessions() as session:
        first = await changes.scan_events(session, tenant.id, 0, mailbox_ids=[wanted], limit=1, scan_limit=3)
        assert first.events == [] and first.through_sequence == noise[2].sequence and not first.caught_up
        second = await changes.scan_events(
            session, tenant.id, first.through_sequence, mailbox_ids=[wanted], limit=1, scan_limit=3
        )
        assert second.events == hit and second.through_sequence == hit[0].sequence
        assert second.pruned_through_sequence == 0
        # A window that ended exactly full cannot know it was the end: one more look says so.
        third = await changes.scan_events(
            session, tenant.id, second.through_sequence, mailbox_ids=[wanted], limit=1, scan_limit=3
        )
        assert third.events == [] and third.caught_up and third.through_sequence == hit[0].sequence


async def test_scan_stops_at_the_limit_and_reports_empty_logs(sessions, tenant):
    mailbox = uuid.uuid4()
    async with sessions() as session:
        empty = await changes.scan_events(session, tenant.id, 7)
        assert (empty.events, empty.through_sequence, empty.caught_up) == ([], 7, True)
        with pytest.raises(NotFound):
            await changes.scan_events(session, uuid.uuid4(), 0)
        with pytest.raises(ValueError):
            await changes.scan_events(session, tenant.id, 0, limit=0)
    async with sessions() as session, session.begin():
        appended = await changes.append_events(session, tenant.id, _events(mailbox, 5))
    async with sessions() as session:
        page = await changes.scan_events(session, tenant.id, 0, limit=2)
        assert page.events == appended[:2] and page.through_sequence == appended[1].sequence
        assert not page.caught_up
        rest = await changes.scan_events(session, tenant.id, page.through_sequence, limit=10)
        assert rest.events == appended[2:] and rest.caught_up


async def test_prune_with_a_limit_works_through_a_backlog_in_bounded_steps(sessions, tenant):
    now = datetime.now(timezone.utc)
    async with sessions() as session, session.begin():
        old = await changes.append_events(session, tenant.id, _events(uuid.uuid4(), 5, observed_at=now - timedelta(days=30)))
    cutoff = now - timedelta(days=7)
    deleted_per_call = []
    while True:
        async with sessions() as session, session.begin():
            deleted = await changes.prune_events(session, cutoff, limit=2)
        deleted_per_call.append(deleted)
        if deleted < 2:
            break
        async with sessions() as session:
            watermark = (await tenants.get_tenant(session, tenant.id)).pruned_through_sequence
            assert watermark == old[sum(deleted_per_call) - 1].sequence
    assert deleted_per_call == [2, 2, 1]
    async with sessions() as session:
        assert (await tenants.get_tenant(session, tenant.id)).pruned_through_sequence == old[-1].sequence
        with pytest.raises(ValueError):
            await changes.prune_events(session, cutoff, limit=0)


async def test_the_scan_partitions_mailboxes_as_the_domain_hash_does(sessions, tenant):
    """PARTITION_SQL and domain.stream_partitions.partition_of agree (the feed and the scan filter alike)."""
    from mailwatch.domain.stream_partitions import StreamPartition, partition_of

    mailboxes = [uuid.uuid4() for _ in range(60)]
    async with sessions() as session, session.begin():
        appended = await changes.append_events(session, tenant.id, [e for m in mailboxes for e in _events(m, 1)])
        appended += await changes.append_events(session, tenant.id, [NewEvent(
            mailbox_id=None, email_address=None, type=EventType.TEST)])
    seen = []
    async with sessions() as session:
        for index in range(5):
            scanned = await changes.scan_events(session, tenant.id, 0, partition=StreamPartition(index, 5))
            assert [e.id for e in scanned.events] == [e.id for e in appended if partition_of(e.mailbox_id, 5) == index]
            seen += scanned.events
    assert sorted(e.sequence for e in seen) == [e.sequence for e in appended]
