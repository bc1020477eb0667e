"""Retention: the prune worker deletes old change events in bounded chunks."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from mailwatch.clock import OffsetClock
from mailwatch.config import ConfigError, PruneSettings
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes, tenants
from mailwatch.store.models import change_events
from mailwatch.workers.prune import PruneWorker
from tests.fixtures.factory import Rows
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

PRUNE = PruneSettings(retention_hours=7 * 24)


async def _append(sessions, mailbox, count, observed_at):
    async with sessions() as session, session.begin():
        return await changes.append_events(session, mailbox.tenant_id, [
            NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_ADDED,
                     message_id=f"m{i}", observed_at=observed_at)
            for i in range(count)
        ])


async def _remaining(sessions, tenant_id):
    async with sessions() as session:
        return list((await session.execute(
            select(change_events.c.sequence).where(change_events.c.tenant_id == tenant_id)
            .order_by(change_events.c.sequence)
        )).scalars())


async def _watermark(sessions, tenant_id):
    async with sessions() as session:
        return (await tenants.get_tenant(session, tenant_id)).pruned_through_sequence


async def test_prune_removes_old_events_in_chunks_raises_watermarks_and_keeps_recent(sessions):
    now = datetime.now(timezone.utc)
    a, mailbox_a = await Rows(sessions).tenant_with_mailbox("a")
    b, mailbox_b = await Rows(sessions).tenant_with_mailbox("b")
    old_a = await _append(sessions, mailbox_a, 120, now - timedelta(days=30))
    old_b = await _append(sessions, mailbox_b, 50, now - timedelta(days=8))
    recent_a = await _append(sessions, mailbox_a, 10, now - timedelta(days=6))
    recent_b = await _append(sessions, mailbox_b, 5, None)  # the database's now()

    worker = PruneWorker(sessions=sessions, settings=PRUNE, chunk_size=40)
    result = await worker.run_once()

    assert result.deleted == 170
    assert result.chunks == 5  # 40 + 40 + 40 + 40 + 10
    assert await _remaining(sessions, a.id) == [e.sequence for e in recent_a]
    assert await _remaining(sessions, b.id) == [e.sequence for e in recent_b]
    assert await _watermark(sessions, a.id) == old_a[-1].sequence
    assert await _watermark(sessions, b.id) == old_b[-1].sequence
    # Nothing left to do: a second pass deletes nothing and moves no watermark.
    assert (await worker.run_once()).deleted == 0
    assert await _watermark(sessions, a.id) == old_a[-1].sequence


async def test_prune_follows_the_injected_clock(sessions):
    now = datetime.now(timezone.utc)
    tenant, mailbox = await Rows(sessions).tenant_with_mailbox("a")
    events = await _append(sessions, mailbox, 3, now - timedelta(days=3))
    clock = OffsetClock()
    worker = PruneWorker(sessions=sessions, settings=PRUNE, clock=clock)
    assert (await worker.run_once()).deleted == 0
    clock.advance(timedelta(days=5))
    assert (await worker.run_once()).deleted == 3
    assert await _remaining(sessions, tenant.id) == []
    assert await _watermark(sessions, tenant.id) == events[-1].sequence


async def test_unbounded_prune_still_works(sessions):
    tenant, mailbox = await Rows(sessions).tenant_with_mailbox("a")
    old = await _append(sessions, mailbox, 7, datetime(2020, 1, 1, tzinfo=timezone.utc))
    async with sessions() as session, session.begin():
        assert await changes.prune_events(session, datetime(2021, 1, 1, tzinfo=timezone.utc)) == 7
    assert await _watermark(sessions, tenant.id) == old[-1].sequence


async def test_the_worker_loop_prunes_until_stopped(sessions):
    tenant, mailbox = await Rows(sessions).tenant_with_mailbox("a")
    await _append(sessions, mailbox, 5, datetime(2020, 1, 1, tzinfo=timezone.utc))
    worker = PruneWorker(sessions=sessions, settings=PRUNE, loop_seconds=0.05, chunk_size=2)
    task = asyncio.create_task(worker.run())

    async def all_pruned() -> bool:
        return await _remaining(sessions, tenant.id) == []

    await eventually(all_pruned)
    # An event that expires later is caught by a later pass of the same loop.
    await _append(sessions, mailbox, 1, datetime(2020, 1, 2, tzinfo=timezone.utc))
    await eventually(all_pruned)
    worker.stop()
    await asyncio.wait_for(task, 5)


async def test_a_disabled_worker_does_nothing(sessions):
    tenant, mailbox = await Rows(sessions).tenant_with_mailbox("a")
    await _append(sessions, mailbox, 2, datetime(2020, 1, 1, tzinfo=timezone.utc))
    await asyncio.wait_for(PruneWorker(sessions=sessions, settings=PruneSettings(enabled=False)).run(), 1)
    assert len(await _remaining(sessions, tenant.id)) == 2


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="MAILWATCH_RETENTION_HOURS must be positive"):
        PruneSettings(retention_hours=0).validate()
    with pytest.raises(ValueError):
        PruneWorker(sessions=None, settings=PRUNE, chunk_size=0)


async def test_the_prune_worker_also_expires_kept_malformed_notifications(sessions):
    from prometheus_client import REGISTRY
    from sqlalchemy import text

    from mailwatch.store import notifications
    from mailwatch.store.models import malformed_notifications

    def dropped() -> float:
        return REGISTRY.get_sample_value(
            "mailwatch_malformed_notifications_dropped_total", {"reason": "expired"}
        ) or 0.0

    clock = OffsetClock()
    async with sessions() as session, session.begin():
        await notifications.insert_malformed(session, [
            notifications.MalformedRecord(source="push", reason="BAD_JSON", pubsub_message_id=str(n))
            for n in range(3)
        ])
        await session.execute(text("UPDATE malformed_notifications SET received_at = now() - interval '30 days'"
                                   " WHERE pubsub_message_id <> '2'"))
    before = dropped()
    await PruneWorker(sessions=sessions, settings=PRUNE, clock=clock, chunk_size=1).run_once()
    async with sessions() as session:
        left = (await session.execute(select(malformed_notifications.c.pubsub_message_id))).scalars().all()
    assert left == ["2"]
    assert dropped() == before + 2


async def test_the_prune_worker_deletes_sealed_credentials_nothing_uses(sessions):
    """The safety net behind the sweep that runs with a credential's last user: a row left
    unreferenced (its delete lost a race) goes at the next pass; a used one stays."""
    from sqlalchemy import text

    from tests.fixtures.factory import fake_sealed_credential

    rows = Rows(sessions)
    tenant = await rows.tenant()
    used = await rows.mailbox(tenant.id, "kept@example.com")
    async with sessions() as session, session.begin():
        orphan = await fake_sealed_credential(session, tenant.id)
    await PruneWorker(sessions=sessions, settings=PRUNE, clock=OffsetClock()).run_once()
    async with sessions() as session:
        left = set((await session.execute(text("SELECT id FROM sealed_credentials WHERE tenant_id = :t"),
                                          {"t": tenant.id})).scalars())
        in_use = (await session.execute(text("SELECT sealed_credential_id FROM mailboxes WHERE id = :m"),
                                        {"m": used.id})).scalar_one()
    assert orphan not in left and left == {in_use}


async def test_the_prune_worker_deletes_usage_buckets_idle_for_an_hour(sessions):
    """A revoked API key's call bucket is never taken from again: it goes once idle for an
    hour (it is full by then, as a new bucket is); one in use stays."""
    from sqlalchemy import text

    from mailwatch.store import usage_buckets

    tenant = (await Rows(sessions).tenant()).id
    for bucket in ("rpc:revoked", "rpc:in-use"):
        await usage_buckets.take(sessions, tenant, bucket, 1, 10.0, 10.0)
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE usage_buckets SET updated = now() - interval '61 minutes'"
                                   " WHERE bucket = 'rpc:revoked'"))
    await PruneWorker(sessions=sessions, settings=PRUNE, clock=OffsetClock()).run_once()
    async with sessions() as session:
        left = (await session.execute(text("SELECT bucket FROM usage_buckets WHERE tenant_id = :t"),
                                      {"t": tenant})).scalars().all()
    assert left == ["rpc:in-use"]
