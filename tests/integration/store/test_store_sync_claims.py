"""The sync claim's fenced page commit, against concurrent writers of the same row."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes, sync_claims
from tests.fixtures.factory import Rows

from .conftest import blocked_on_a_lock, claimed_by_sync

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=60)


async def _claimed(sessions, address: str):
    return await claimed_by_sync(sessions, address, owner="me", now=NOW, lease=LEASE)


def _event(mailbox) -> NewEvent:
    return NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_ADDED,
                    history_id=120, message_id="m1", thread_id="t1", label_ids=("INBOX",))


async def _final_page(sessions, mailbox, *, owner="me", events=()):
    return await sync_claims.commit_sync_page(
        sessions, mailbox, owner=owner, expected_history_id=100, new_history_id=120, events=list(events),
        final=True, now=NOW, lease=LEASE,
    )


async def _row(sessions, mailbox):
    async with sessions() as session:
        return (await session.execute(
            text("SELECT notified_history_id, sync_due_at, sync_attempts, lease_owner, history_id "
                 "FROM mailboxes WHERE id = :id"), {"id": mailbox.id})).one()


async def test_a_notification_recorded_while_the_final_page_waits_for_the_row_is_judged(sessions):
    """The final page judges the notified id under the row lock: one raised by a writer
    that held the row (ingest) while the page waited is the one compared, not the one
    the page's statement started from."""
    _, mailbox = await _claimed(sessions, "judged@example.com")
    ingest = sessions()
    await ingest.begin()
    await ingest.execute(text("UPDATE mailboxes SET notified_history_id = 500 WHERE id = :id"), {"id": mailbox.id})
    page = asyncio.create_task(_final_page(sessions, mailbox))
    await blocked_on_a_lock(sessions)
    assert not page.done(), "the final page must wait for the row"
    await ingest.commit()
    await ingest.close()
    committed = await asyncio.wait_for(page, 10)
    assert committed.catch_up is sync_claims.CatchUp.BEHIND and committed.notified_history_id == 500
    row = await _row(sessions, mailbox)
    assert (row.notified_history_id, row.sync_due_at, row.sync_attempts, row.lease_owner, row.history_id) == (
        500, NOW, 1, None, 120)


async def test_a_final_page_caught_up_releases_the_claim_and_writes_its_events(sessions):
    tenant, mailbox = await _claimed(sessions, "caught@example.com")
    committed = await _final_page(sessions, mailbox, events=[_event(mailbox)])
    assert committed.catch_up is sync_claims.CatchUp.CAUGHT_UP
    row = await _row(sessions, mailbox)
    assert (row.sync_due_at, row.sync_attempts, row.lease_owner, row.history_id) == (None, 0, None, 120)
    async with sessions() as session:
        assert [e.message_id for e in await changes.read_events(session, tenant.id, 0)] == ["m1"]


async def test_a_final_page_of_a_lost_lease_writes_nothing(sessions):
    tenant, mailbox = await _claimed(sessions, "lost@example.com")
    with pytest.raises(sync_claims.LeaseLost):
        await _final_page(sessions, mailbox, owner="someone-else", events=[_event(mailbox)])
    row = await _row(sessions, mailbox)
    assert (row.lease_owner, row.history_id) == ("me", 100)
    async with sessions() as session:
        assert await changes.read_events(session, tenant.id, 0) == []


async def test_pages_of_the_same_shape_each_write_their_own_values(sessions):
    """The statement's SQL is compiled once per shape: each call's values still go in."""
    _, first = await _claimed(sessions, "first@example.com")
    _, second = await _claimed(sessions, "second@example.com")
    for mailbox, new_history_id in ((first, 130), (second, 140)):
        await sync_claims.commit_sync_page(
            sessions, mailbox, owner="me", expected_history_id=100, new_history_id=new_history_id,
            events=[_event(mailbox)], final=False, now=NOW, lease=LEASE,
        )
    assert (await _row(sessions, first)).history_id == 130
    assert (await _row(sessions, second)).history_id == 140
    async with sessions() as session:
        for mailbox in (first, second):
            [event] = await changes.read_events(session, mailbox.tenant_id, 0)
            assert event.mailbox_id == mailbox.id


async def test_the_claim_leaves_the_mailboxes_of_tenants_past_their_gmail_budget_due(sessions):
    rows = Rows(sessions)
    over, within = await rows.tenant(), await rows.tenant()
    await rows.mailbox(over.id, "over@budget.test", history_id=100)
    await rows.mailbox(within.id, "within@budget.test", history_id=100)
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET sync_due_at = :now WHERE email_address LIKE '%@budget.test'"),
                              {"now": NOW})

    claimed = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=10,
                                            skip_tenants=[over.id])
    assert [c.mailbox.email_address for c in claimed] == ["within@budget.test"]
    # Its turn comes once the tenant is no longer skipped; its due time was kept.
    later = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=10)
    assert [c.mailbox.email_address for c in later] == ["over@budget.test"]


async def test_tenants_take_turns_so_one_tenants_flood_of_due_mailboxes_does_not_hold_back_anothers(sessions):
    rows = Rows(sessions)
    flooding, steady = await rows.flood_and_steady("turns.test", 5)
    async with sessions() as session, session.begin():
        # The flood became due first; the steady tenant's one mailbox last.
        await session.execute(text(
            "UPDATE mailboxes SET sync_due_at = :now - make_interval(secs => 10 - coalesce(substring(email_address "
            "FROM 'flood([0-9])')::int, 9)) WHERE email_address LIKE '%@turns.test'"), {"now": NOW})

    first = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=2)
    assert sorted(c.mailbox.email_address for c in first) == ["flood0@turns.test", "steady@turns.test"]
    rest = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=10)
    assert sorted(c.mailbox.email_address for c in rest) == [f"flood{n}@turns.test" for n in range(1, 5)]


async def test_turns_carry_over_from_the_syncs_a_worker_still_runs_to_its_next_one_slot_claim(sessions):
    """A busy worker claims into one free slot at a time. Turns counted within such a claim
    alone let the flood's earliest due mailbox win every slot; a tenant the worker already
    runs syncs for starts its turns after them, so the steady tenant's newly due mailbox
    takes the next free slot."""
    rows = Rows(sessions)
    flooding, steady = await rows.flood_and_steady("carry.test", 5)
    async with sessions() as session, session.begin():
        await session.execute(text(
            "UPDATE mailboxes SET sync_due_at = CASE WHEN email_address LIKE 'steady%' THEN :now "
            "ELSE :now - interval '10 seconds' END WHERE email_address LIKE '%@carry.test'"), {"now": NOW})

    # The worker runs two of the flood's syncs: one slot frees up.
    one_slot = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=1,
                                             running=[flooding.id, flooding.id])
    assert [c.mailbox.email_address for c in one_slot] == ["steady@carry.test"]
    # Nothing running for the flood: its earliest due is first again.
    again = await sync_claims.claim_syncs(sessions, owner="me", now=NOW, lease=LEASE, limit=1)
    assert [c.mailbox.tenant_id for c in again] == [flooding.id]


async def test_the_fallback_poll_marks_only_mailboxes_quiet_for_the_interval(sessions):
    from mailwatch.store import claims

    rows = Rows(sessions)
    tenant = await rows.tenant()
    quiet = await rows.mailbox(tenant.id, "quiet@example.com", history_id=100)
    recent = await rows.mailbox(tenant.id, "recent@example.com", history_id=100)
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET last_sync_at = :at, sync_due_at = NULL WHERE id = :id"),
                              {"at": NOW - timedelta(minutes=10), "id": quiet.id})
        await session.execute(text("UPDATE mailboxes SET last_sync_at = :at, sync_due_at = NULL WHERE id = :id"),
                              {"at": NOW - timedelta(minutes=1), "id": recent.id})
    assert await claims.mark_quiet_due(sessions, now=NOW, quiet_for=timedelta(minutes=5), limit=10) == 1
    assert (await _row(sessions, quiet)).sync_due_at == NOW
    assert (await _row(sessions, recent)).sync_due_at is None
    # Due now, so not quiet any more: a second tick marks nothing.
    assert await claims.mark_quiet_due(sessions, now=NOW, quiet_for=timedelta(minutes=5), limit=10) == 0
