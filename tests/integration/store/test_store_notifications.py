"""Ingest's batch write: notifications mark mailboxes due; malformed ones are kept."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from mailwatch.domain.models import MailboxState
from mailwatch.store import mailboxes, notifications, tenants
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES
from mailwatch.store.notifications import MalformedRecord, NotificationOutcome
from tests.fixtures.factory import add_mailbox

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)


async def _mailbox(session, tenant_id, address, history_id=100):
    return await add_mailbox(session, tenant_id, address, history_id=history_id)


async def test_notifications_mark_active_mailboxes_due_across_tenants(sessions):
    async with sessions() as session, session.begin():
        a = await tenants.create_tenant(session, "a")
        b = await tenants.create_tenant(session, "b")
        alice_a = await _mailbox(session, a.id, "alice@example.com")
        alice_b = await _mailbox(session, b.id, "alice@example.com", history_id=500)
        stopped = await _mailbox(session, a.id, "carol@example.com")
        await mailboxes.mark_stopped(session, a.id, stopped.id)

    async with sessions() as session, session.begin():
        outcomes = await notifications.record_notification_batch(
            session,
            {"Alice@Example.com": 300, "carol@example.com": 900, "nobody@example.com": 5},
            now=NOW,
        )
    assert outcomes == {
        # b's mailbox already synced past 300: recorded, but not made due.
        "alice@example.com": NotificationOutcome(active=2, inactive=0, marked_due=1),
        "carol@example.com": NotificationOutcome(active=0, inactive=1, marked_due=0),
    }
    async with sessions() as session:
        got_a = await mailboxes.get_mailbox(session, a.id, alice_a.id)
        got_b = await mailboxes.get_mailbox(session, b.id, alice_b.id)
        got_stopped = await mailboxes.get_mailbox(session, a.id, stopped.id)
    assert (got_a.notified_history_id, got_a.sync_due_at, got_a.last_notification_at) == (300, NOW, NOW)
    assert (got_b.notified_history_id, got_b.sync_due_at, got_b.last_notification_at) == (300, None, NOW)
    assert got_stopped.state is MailboxState.STOPPED and got_stopped.notified_history_id is None


async def test_older_notifications_never_lower_the_watermark_or_delay_a_due_sync(sessions):
    async with sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, "a")
        mailbox = await _mailbox(session, tenant.id, "alice@example.com")
    async with sessions() as session, session.begin():
        await notifications.record_notification_batch(session, {"alice@example.com": 300}, now=NOW)
    later = NOW.replace(hour=13)
    async with sessions() as session, session.begin():
        await notifications.record_notification_batch(session, {"alice@example.com": 200}, now=later)
    async with sessions() as session:
        got = await mailboxes.get_mailbox(session, tenant.id, mailbox.id)
    assert got.notified_history_id == 300
    assert got.sync_due_at == NOW  # the earlier due time stands
    assert got.last_notification_at == later


async def test_empty_batch_and_database_clock(sessions):
    async with sessions() as session, session.begin():
        assert await notifications.record_notification_batch(session, {}) == {}
        tenant = await tenants.create_tenant(session, "a")
        mailbox = await _mailbox(session, tenant.id, "alice@example.com", history_id=None)
    async with sessions() as session, session.begin():
        outcomes = await notifications.record_notification_batch(session, {"alice@example.com": 1})
    assert outcomes["alice@example.com"].marked_due == 1
    async with sessions() as session:
        assert (await mailboxes.get_mailbox(session, tenant.id, mailbox.id)).sync_due_at is not None


async def test_malformed_messages_are_kept_truncated(sessions):
    huge = b"x" * (MALFORMED_DATA_MAX_BYTES + 100)
    async with sessions() as session, session.begin():
        await notifications.insert_malformed(session, [])
        await notifications.insert_malformed(
            session,
            [
                MalformedRecord(source="projects/p/subscriptions/s", reason="BAD_JSON", pubsub_message_id="1",
                                data=huge, attributes={"k": "v"}),
                MalformedRecord(source="push", reason="BAD_ENVELOPE"),
            ],
        )
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT source, reason, pubsub_message_id, length(data) AS size, attributes, received_at "
                     "FROM malformed_notifications ORDER BY source")
            )
        ).all()
    assert [(r.source, r.reason, r.pubsub_message_id, r.size, r.attributes) for r in rows] == [
        ("projects/p/subscriptions/s", "BAD_JSON", "1", MALFORMED_DATA_MAX_BYTES, {"k": "v"}),
        ("push", "BAD_ENVELOPE", None, None, {}),
    ]
    assert all(r.received_at is not None for r in rows)


def _bad(source: str, message_id: str | None, n: int = 0) -> MalformedRecord:
    return MalformedRecord(source=source, reason="BAD_JSON", pubsub_message_id=message_id, data=b"junk %d" % n)


async def _kept(sessions) -> list[tuple[str, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT source, pubsub_message_id FROM malformed_notifications ORDER BY source, pubsub_message_id")
        )
        return [tuple(r) for r in rows]


async def test_a_redelivered_malformed_message_is_kept_once(sessions):
    async with sessions() as session, session.begin():
        first = await notifications.insert_malformed(session, [_bad("sub", "7"), _bad("sub", "7"), _bad("push", "7")])
    async with sessions() as session, session.begin():
        again = await notifications.insert_malformed(session, [_bad("sub", "7"), _bad("sub", "8")])
    assert (first.stored, first.duplicates) == (2, 1)
    assert (again.stored, again.duplicates) == (1, 1)
    # Same id from another source (push vs a subscription) is another delivery path: kept.
    assert await _kept(sessions) == [("push", "7"), ("sub", "7"), ("sub", "8")]


async def test_each_source_keeps_only_its_newest_malformed_messages(sessions):
    for n in range(5):  # one transaction each: received_at increases
        async with sessions() as session, session.begin():
            await notifications.insert_malformed(session, [_bad("flood", str(n), n)], max_per_source=3)
    async with sessions() as session, session.begin():
        kept = await notifications.insert_malformed(
            session, [_bad("flood", "5", 5), _bad("quiet", "1")], max_per_source=3
        )
    assert kept.stored == 2 and kept.over_cap == 1
    assert await _kept(sessions) == [("flood", "3"), ("flood", "4"), ("flood", "5"), ("quiet", "1")]


async def test_malformed_messages_older_than_retention_are_pruned(sessions):
    async with sessions() as session, session.begin():
        await notifications.insert_malformed(session, [_bad("sub", str(n)) for n in range(5)])
        await session.execute(
            text("UPDATE malformed_notifications SET received_at = :old WHERE pubsub_message_id IN ('0', '1', '2')"),
            {"old": datetime(2020, 1, 1, tzinfo=timezone.utc)},
        )
    async with sessions() as session, session.begin():
        assert await notifications.prune_malformed(session, datetime(2021, 1, 1, tzinfo=timezone.utc), limit=2) == 2
    async with sessions() as session, session.begin():
        assert await notifications.prune_malformed(session, datetime(2021, 1, 1, tzinfo=timezone.utc), limit=2) == 1
    assert await _kept(sessions) == [("sub", "3"), ("sub", "4")]
