"""A backfill batch (`store.backfills.deliver_batch`) against the live sync's commits and
StopMailbox, on a real Postgres: a live commit landing between the batch's reads and its
append is seen by the append (the batch is decided again), one landing during the append
waits for it, and a stopped mailbox's batch appends nothing; a mailbox stopped while its
backfill is being claimed is left out of the claim."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from mailwatch.domain.backfill import BackfillRequest, BackfillState
from mailwatch.domain.models import EventType, MessageLabels, NewEvent
from mailwatch.store import backfills, changes, registrations, sealed_credentials, sync_claims
from mailwatch.sync.backfill import completed_event, decide
from tests.fixtures.factory import Rows
from tests.fixtures.waiting import eventually

from .conftest import claimed_by_sync

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=60)
REQUEST = BackfillRequest(newest=1)


async def _claimed_backfill(sessions, address: str, listed: tuple[str, ...] = ("m1",)):
    """A tenant, its mailbox claimed by the live sync ("sync", history 100) and a backfill
    claimed by "bf" with `listed` (thread t1 for m1 and so on); (tenant, mailbox, job)."""
    tenant, mailbox = await claimed_by_sync(sessions, address, owner="sync", now=NOW, lease=LEASE)
    await backfills.request_backfill(sessions, tenant.id, [mailbox.id], REQUEST)
    job = await _claim(sessions, tenant, mailbox, REQUEST)
    job = await backfills.save_listing(sessions, job, owner="bf", listed=[(m, "t" + m[1:]) for m in listed], now=NOW)
    return tenant, mailbox, job


async def _claim(sessions, tenant, mailbox, request: BackfillRequest) -> backfills.BackfillJob:
    """The mailbox's stored backfill (LISTING), claimed by "bf"."""
    async with sessions() as session, session.begin():
        start, generation = (await session.execute(
            text("UPDATE mailbox_backfills SET lease_owner = 'bf' WHERE mailbox_id = :id "
                 "RETURNING start_sequence, generation"), {"id": mailbox.id})).one()
    return backfills.BackfillJob(mailbox.id, tenant.id, request, BackfillState.LISTING, start, 0, 0, 0, 0, 0,
                                 generation)


async def _deliver(sessions, job, mailbox, found, *, limit: int = 50, live=None):
    batch = await backfills.listed_messages(sessions, job, limit=limit)
    return await backfills.deliver_batch(
        sessions, job, mailbox, owner="bf", message_ids=[listed.message_id for listed in batch],
        decide=lambda synced, logged: decide(mailbox, batch, found, synced, logged),
        completed_event=lambda *counts: completed_event(mailbox, *counts), now=NOW, live=live)


async def _log(sessions, tenant, job) -> list[tuple[str, str | None]]:
    async with sessions() as session:
        return [(e.type.name, e.message_id) for e in await changes.read_events(session, tenant.id, job.start_sequence)]


async def _waits_for_a_lock(sessions) -> bool:
    async with sessions() as session:
        return await session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )) > 0


def _deletion(mailbox) -> NewEvent:
    return NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address,
                    type=EventType.MESSAGE_DELETED, history_id=120, message_id="m1", thread_id="t1")


def _live_commit(sessions, mailbox) -> asyncio.Task:
    """The live sync's page deleting m1 (history 100 -> 120), committing in a task."""
    return asyncio.create_task(sync_claims.commit_sync_page(
        sessions, mailbox, owner="sync", expected_history_id=100, new_history_id=120, events=[_deletion(mailbox)],
        final=True, now=NOW, lease=LEASE))


async def test_a_live_deletion_committed_while_the_batch_appends_comes_after_its_message_existing(sessions, monkeypatch):
    """The batch read m1's labels (history 90) and the synced history id (100); the live
    sync's page deleting m1 (100 -> 120) commits while the batch appends. It must wait for the
    batch: the stream carries MESSAGE_EXISTING(m1) then MESSAGE_DELETED(m1), never a
    MESSAGE_EXISTING after the deletion (a ghost the consumer would keep)."""
    tenant, mailbox, job = await _claimed_backfill(sessions, "race@example.com")
    live: list[asyncio.Task] = []
    append = backfills.update_and_append

    async def live_commit_during_the_append(connection, sql, params, tenant_id, events):
        live.append(_live_commit(sessions, mailbox))
        # It waits for the batch's writer lock (taken before this statement, held to its commit).
        await eventually(lambda: _waits_for_a_lock(sessions), what="the live commit waits for the batch")
        assert not live[0].done()
        return await append(connection, sql, params, tenant_id, events)

    monkeypatch.setattr(backfills, "update_and_append", live_commit_during_the_append)
    _, done = await _deliver(sessions, job, mailbox, {"m1": MessageLabels(("INBOX",), 90)})
    await asyncio.wait_for(live[0], 30)

    assert (done.delivered, done.completed) == (1, True)
    log = [entry for entry in await _log(sessions, tenant, job) if entry[1] == "m1"]
    assert log == [("MESSAGE_EXISTING", "m1"), ("MESSAGE_DELETED", "m1")]


async def test_a_live_deletion_committed_between_the_reads_and_the_append_is_seen_by_the_append(sessions, monkeypatch):
    """The batch decides without the writer lock; the live page deleting m1 commits after the
    batch's reads, just before it takes the lock. The append sees the deletion past what was
    read, and the batch is decided again: m1 waits (its labels were read before the
    deletion), nothing is appended after the deletion."""
    tenant, mailbox, job = await _claimed_backfill(sessions, "overtaken@example.com")
    found = {"m1": MessageLabels(("INBOX",), 90)}
    batch = await backfills.listed_messages(sessions, job, limit=50)
    decided: list[list] = []
    read_log = backfills._read_log

    def deciding(synced, logged):
        delivery = decide(mailbox, batch, found, synced, logged)
        decided.append([e.type for e in delivery.events])
        return delivery

    async def live_commit_after_the_first_reads(sessions_, job_, message_ids):
        read = await read_log(sessions_, job_, message_ids)
        if not decided:
            await asyncio.wait_for(_live_commit(sessions, mailbox), 30)  # nothing of the batch holds it back
        return read

    monkeypatch.setattr(backfills, "_read_log", live_commit_after_the_first_reads)
    moved, done = await backfills.deliver_batch(
        sessions, job, mailbox, owner="bf", message_ids=["m1"], decide=deciding,
        completed_event=lambda *counts: completed_event(mailbox, *counts), now=NOW)

    assert decided == [[EventType.MESSAGE_EXISTING], []], "decided to deliver m1, then again on the deletion: wait"
    assert (done.delivered, done.skipped, done.completed, moved.next_position) == (0, 0, False, 0)
    assert await _log(sessions, tenant, job) == [("MESSAGE_DELETED", "m1")]


async def test_a_live_deletion_committed_before_the_batch_makes_it_wait(sessions):
    """The live page deleting m1 committed after the labels were read, before the batch: the
    batch sees the newer change in the log and delivers nothing (it waits and reads again)."""
    tenant, mailbox, job = await _claimed_backfill(sessions, "before@example.com")
    await _live_commit(sessions, mailbox)

    moved, done = await _deliver(sessions, job, mailbox, {"m1": MessageLabels(("INBOX",), 90)})

    assert (done.delivered, done.skipped, done.completed, moved.next_position) == (0, 0, False, 0)
    assert await _log(sessions, tenant, job) == [("MESSAGE_DELETED", "m1")]



async def test_each_batch_reads_the_log_on_from_where_the_one_before_stopped(sessions):
    """m1 and m2 listed, one a batch; the live sync adds m2 (100 -> 110) before the first batch.
    The first batch (m1) reads the mailbox's events since the backfill started, m2's with
    them; the second (m2) reads only what the log gained since and still skips m2 (the live
    stream delivered it). A LiveLog kept for another backfill of the mailbox is not reused."""
    tenant, mailbox, job = await _claimed_backfill(sessions, "readon@example.com", listed=("m1", "m2"))
    added = NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_ADDED,
                     history_id=110, message_id="m2", thread_id="t2", label_ids=("INBOX",))
    await sync_claims.commit_sync_page(sessions, mailbox, owner="sync", expected_history_id=100, new_history_id=110,
                                       events=[added], final=True, now=NOW, lease=LEASE)
    found = {"m1": MessageLabels(("INBOX",), 90), "m2": MessageLabels(("INBOX",), 110)}
    live = backfills.LiveLog.for_job(job)

    job, first = await _deliver(sessions, job, mailbox, found, limit=1, live=live)
    assert (first.delivered, first.skipped) == (1, 0)
    assert [e.type for e in live.events["m2"]] == [EventType.MESSAGE_ADDED]
    read_through = live.through
    assert read_through > job.start_sequence
    job, second = await _deliver(sessions, job, mailbox, found, limit=1, live=live)

    assert (second.delivered, second.skipped, second.completed) == (0, 1, True)
    assert live.through > read_through, "the second batch read on past the first one's reads (its own append)"
    assert await _log(sessions, tenant, job) == [
        ("MESSAGE_ADDED", "m2"), ("MESSAGE_EXISTING", "m1"), ("BACKFILL_COMPLETED", None)]
    replaced = backfills.BackfillJob(**{**job.__dict__, "generation": job.generation + 1})
    assert backfills.LiveLog.for_job(replaced, live) is not live
    assert backfills.LiveLog.for_job(job, live) is live

async def test_a_stopped_mailbox_gets_no_batch(sessions):
    """StopMailbox while the backfill holds its claim: the next batch appends nothing and
    leaves the pointer where it was."""
    tenant, mailbox, job = await _claimed_backfill(sessions, "stopped@example.com")
    await registrations.stop_mailbox(sessions, tenant.id, mailbox.id)

    with pytest.raises(backfills.MailboxNotActive):
        await _deliver(sessions, job, mailbox, {"m1": MessageLabels(("INBOX",), 90)})

    assert await _log(sessions, tenant, job) == [("MAILBOX_STOPPED", None)]
    async with sessions() as session:
        assert (await session.execute(text("SELECT next_position, delivered FROM mailbox_backfills WHERE mailbox_id = :id"),
                                      {"id": mailbox.id})).one() == (0, 0)


async def test_a_replaced_backfill_still_running_under_the_same_owner_writes_nothing(sessions):
    """Registering again with another backfill request replaces the backfill while a run of
    the old one goes on in this process, which then claims the new one (the same owner
    string): the old run can neither save its listing nor deliver into the new backfill."""
    rows = Rows(sessions)
    tenant = await rows.tenant()
    mailbox = await rows.mailbox(tenant.id, "replaced@example.com", history_id=100)
    await backfills.request_backfill(sessions, tenant.id, [mailbox.id], REQUEST)
    old = await _claim(sessions, tenant, mailbox, REQUEST)
    other = BackfillRequest(newest=2)
    await backfills.request_backfill(sessions, tenant.id, [mailbox.id], other)
    new = await _claim(sessions, tenant, mailbox, other)
    assert new.generation == old.generation + 1

    with pytest.raises(backfills.LeaseLost):
        await backfills.save_listing(sessions, old, owner="bf", listed=[("stale", "t0")], now=NOW)
    new = await backfills.save_listing(sessions, new, owner="bf", listed=[("m1", "t1"), ("m2", "t2")], now=NOW)
    stale = backfills.BackfillJob(**{**old.__dict__, "state": BackfillState.DELIVERING, "listed": 1})
    with pytest.raises(backfills.LeaseLost):
        await _deliver(sessions, stale, mailbox, {"m1": MessageLabels(("INBOX",), 90)})

    assert await _log(sessions, tenant, new) == []
    async with sessions() as session:
        assert (await session.execute(text(
            "SELECT state, listed, next_position, lease_owner FROM mailbox_backfills WHERE mailbox_id = :id"),
            {"id": mailbox.id})).one() == ("DELIVERING", 2, 0, "bf")
        assert (await session.execute(text(
            "SELECT message_id FROM backfill_messages WHERE mailbox_id = :id ORDER BY position"),
            {"id": mailbox.id})).scalars().all() == ["m1", "m2"]


async def test_a_mailbox_stopped_while_its_backfill_is_claimed_is_left_out_of_the_claim(sessions, monkeypatch):
    """StopMailbox commits between the claim's UPDATE (which locks backfill rows, not the
    mailbox) and its read of the credentials: the stopped mailbox has none. The claim hands
    out the other backfill, gives the stopped one's lease back, and does not fail."""
    rows = Rows(sessions)
    tenant = await rows.tenant()
    stopped = await rows.mailbox(tenant.id, "stopped@example.com", history_id=100)
    other = await rows.mailbox(tenant.id, "other@example.com", history_id=100)
    await backfills.request_backfill(sessions, tenant.id, [stopped.id, other.id], REQUEST)
    read = sealed_credentials.load_stored
    stops = []

    async def stop_first(session, tenant_id, ids):
        if not stops:
            stops.append(await registrations.stop_mailbox(sessions, tenant.id, stopped.id))
        return await read(session, tenant_id, ids)

    monkeypatch.setattr(sealed_credentials, "load_stored", stop_first)
    now = datetime.now(timezone.utc) + timedelta(minutes=5)
    claimed = await backfills.claim_backfills(sessions, owner="bf", now=now, lease=LEASE, limit=10)
    assert stops and [c.mailbox.id for c in claimed] == [other.id]
    async with sessions() as session:
        leases = dict((await session.execute(text(
            "SELECT mailbox_id, lease_owner FROM mailbox_backfills WHERE tenant_id = :tenant"),
            {"tenant": tenant.id})).all())
    assert leases == {stopped.id: None, other.id: "bf"}
    monkeypatch.setattr(sealed_credentials, "load_stored", read)
    assert await backfills.claim_backfills(sessions, owner="bf2", now=now + 2 * LEASE, lease=LEASE, limit=10) != []
    async with sessions() as session:
        owners = dict((await session.execute(text(
            "SELECT mailbox_id, lease_owner FROM mailbox_backfills WHERE tenant_id = :tenant"),
            {"tenant": tenant.id})).all())
    assert owners == {stopped.id: None, other.id: "bf2"}  # a STOPPED mailbox's backfill is not claimed again


async def test_any_due_says_whether_the_claim_has_something_to_take(sessions):
    """The backfill worker's cheap probe before its claim: true exactly while an unfinished
    backfill is due and not leased by a live claim."""
    rows = Rows(sessions)
    tenant = await rows.tenant()
    mailbox = await rows.mailbox(tenant.id, "probe@example.com", history_id=100)
    now = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert not await backfills.any_due(sessions, now=now)  # none requested
    await backfills.request_backfill(sessions, tenant.id, [mailbox.id], REQUEST)
    assert await backfills.any_due(sessions, now=now)
    [claimed] = await backfills.claim_backfills(sessions, owner="bf", now=now, lease=LEASE, limit=10)
    assert not await backfills.any_due(sessions, now=now)  # leased
    assert await backfills.any_due(sessions, now=now + 2 * LEASE)  # the lease lapsed: claimable again
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailbox_backfills SET state = 'COMPLETED', lease_owner = NULL,"
                                   " lease_expires_at = NULL WHERE mailbox_id = :id"), {"id": claimed.mailbox.id})
    assert not await backfills.any_due(sessions, now=now + 2 * LEASE)  # finished
