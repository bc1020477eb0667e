"""The change log's day partitions: created ahead (moving strays out of the default
partition), dropped whole when expired with exact watermarks, reads unchanged."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from mailwatch.clock import OffsetClock
from mailwatch.config import PruneSettings
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes, partitions, tenants
from mailwatch.workers.prune import PruneWorker

pytestmark = pytest.mark.integration


def _events(mailbox_id, n, *, observed_at=None, start=1):
    return [
        NewEvent(mailbox_id=mailbox_id, email_address="alice@example.com", type=EventType.MESSAGE_ADDED,
                 history_id=start + i, message_id=f"m{start + i}", observed_at=observed_at)
        for i in range(n)
    ]


async def _append(sessions, tenant_id, events):
    async with sessions() as session, session.begin():
        return await changes.append_events(session, tenant_id, events)


async def _homes(sessions) -> dict[int, str]:
    """Each stored event's sequence -> the partition holding it."""
    async with sessions() as session:
        rows = await session.execute(text("SELECT sequence, tableoid::regclass::text FROM change_events"))
        return dict(rows.all())


async def _watermark(sessions, tenant_id) -> int:
    async with sessions() as session:
        return (await tenants.get_tenant(session, tenant_id)).pruned_through_sequence


@pytest.fixture
async def two_tenants(sessions):
    async with sessions() as session, session.begin():
        return await tenants.create_tenant(session, "a"), await tenants.create_tenant(session, "b")


async def test_a_migrated_log_has_today_and_days_ahead_and_rows_land_in_their_day(sessions, two_tenants):
    a, _ = two_tenants
    today = datetime.now(timezone.utc).date()
    names = [p.name for p in await partitions.list_partitions(sessions)]
    assert names[-1] == partitions.DEFAULT_PARTITION
    # The suite's template database was migrated today (or, in a run across midnight, yesterday).
    migrated_on = today if partitions.day_partition_name(today + timedelta(days=3)) in names else today - timedelta(days=1)
    for offset in range(4):
        assert partitions.day_partition_name(migrated_on + timedelta(days=offset)) in names
    appended = await _append(sessions, a.id, _events(uuid.uuid4(), 3))
    far_past = await _append(sessions, a.id, _events(uuid.uuid4(), 1, observed_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    homes = await _homes(sessions)
    # The transaction's now() is in today's partition unless midnight passed in between.
    assert {homes[e.sequence] for e in appended} <= {partitions.day_partition_name(today),
                                                    partitions.day_partition_name(today + timedelta(days=1))}
    assert homes[far_past[0].sequence] == partitions.DEFAULT_PARTITION


async def test_creating_a_day_moves_its_rows_out_of_the_default_partition(sessions, two_tenants):
    a, _ = two_tenants
    day = datetime.now(timezone.utc).date() + timedelta(days=20)
    lower, _ = partitions.day_bounds(day)
    mailbox = uuid.uuid4()
    before = await _append(sessions, a.id, _events(mailbox, 2))
    skewed = await _append(sessions, a.id, _events(mailbox, 3, observed_at=lower + timedelta(hours=5), start=3))
    after = await _append(sessions, a.id, _events(mailbox, 2, start=6))
    assert {(await _homes(sessions))[e.sequence] for e in skewed} == {partitions.DEFAULT_PARTITION}

    assert await partitions.ensure_day_partitions(sessions, day, 2) == [
        partitions.day_partition_name(day), partitions.day_partition_name(day + timedelta(days=1))]
    assert await partitions.ensure_day_partitions(sessions, day, 2) == []  # idempotent
    homes = await _homes(sessions)
    assert {homes[e.sequence] for e in skewed} == {partitions.day_partition_name(day)}
    # Same rows, same sequences, same order for a reader.
    async with sessions() as session:
        assert await changes.read_events(session, a.id, 0) == before + skewed + after


async def test_an_expired_day_is_dropped_whole_and_the_watermarks_are_exact(sessions, two_tenants):
    a, b = two_tenants
    now = datetime.now(timezone.utc)
    old_day = (now - timedelta(days=10)).date()
    assert await partitions.ensure_day_partitions(sessions, old_day, 1) == [partitions.day_partition_name(old_day)]
    mailbox = uuid.uuid4()
    old_clock = partitions.day_bounds(old_day)[0] + timedelta(hours=1)
    recent_a1 = await _append(sessions, a.id, _events(mailbox, 2))
    old_a = await _append(sessions, a.id, _events(mailbox, 3, observed_at=old_clock, start=3))
    recent_a2 = await _append(sessions, a.id, _events(mailbox, 2, start=6))
    old_b = await _append(sessions, b.id, _events(mailbox, 4, observed_at=old_clock))
    stray = await _append(sessions, b.id, _events(mailbox, 1, observed_at=now - timedelta(days=30)))

    # Not yet: the day's last moment is not older than the cutoff.
    assert await partitions.drop_expired_partitions(sessions, partitions.day_bounds(old_day)[1] - timedelta(seconds=1)) == []
    dropped = await partitions.drop_expired_partitions(sessions, now - timedelta(days=7))
    assert [p.name for p in dropped] == [partitions.day_partition_name(old_day)]
    async with sessions() as session:
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": dropped[0].name})).scalar_one() is None

    # Tenant a's watermark is its newest event of that day: the two recent events
    # sequenced before it are below the watermark (expired for cursors), those after are read.
    assert await _watermark(sessions, a.id) == old_a[-1].sequence
    assert await _watermark(sessions, b.id) == old_b[-1].sequence
    async with sessions() as session:
        assert (await changes.scan_events(session, a.id, old_a[-1].sequence)).events == recent_a2
        assert await changes.latest_sequence(session, a.id) == recent_a2[-1].sequence
    homes = await _homes(sessions)
    assert recent_a1[0].sequence in homes  # stays until its own day goes
    assert homes[stray[0].sequence] == partitions.DEFAULT_PARTITION  # the default partition is never dropped
    assert await partitions.drop_expired_partitions(sessions, now - timedelta(days=7)) == []


async def test_the_worker_creates_days_ahead_and_drops_expired_days_as_time_passes(sessions, two_tenants):
    a, _ = two_tenants
    clock = OffsetClock()
    worker = PruneWorker(sessions=sessions, settings=PruneSettings(retention_hours=48), clock=clock, days_ahead=3)
    today = clock.now().date()
    first = await worker.run_once()  # the migration made today's and the next days' (unless midnight passed since)
    assert first.partitions_dropped == ()
    names = {p.name for p in await partitions.list_partitions(sessions)}
    assert {partitions.day_partition_name(today + timedelta(days=n)) for n in range(4)} <= names
    events = await _append(sessions, a.id, _events(uuid.uuid4(), 3))
    home = (await _homes(sessions))[events[0].sequence]

    clock.advance(timedelta(days=5))
    later = await worker.run_once()
    assert later.partitions_created == tuple(
        partitions.day_partition_name(today + timedelta(days=n)) for n in (5, 6, 7, 8))
    assert home in later.partitions_dropped
    assert await _watermark(sessions, a.id) == events[-1].sequence
    assert events[0].sequence not in await _homes(sessions)
    again = await worker.run_once()
    assert again.partitions_created == () and again.partitions_dropped == ()
