"""PullIngestor against the real Pub/Sub emulator and a real Postgres database."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from tests.fixtures.waiting import eventually, stays
from tests.integration.ingest._ingest_support import ACK_DEADLINE_SECONDS, notification
from prometheus_client import REGISTRY

from mailwatch_devstack.ports import free_port
from mailwatch.domain.models import MailboxState
from mailwatch.ingest import PullIngestor
from mailwatch.ingest.subscriber import Subscriber, connect
from mailwatch.store import create_engine, session_factory
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES

pytestmark = pytest.mark.integration

FAST = dict(pull_timeout=1.0, idle_seconds=0.05, backoff_initial=0.05, backoff_max=0.2)


def ingestor(sessions, pubsub, **kw) -> PullIngestor:
    return PullIngestor(sessions, [pubsub.subscription], **{**FAST, **kw})


async def returned(subscriber):
    """A subscriber_factory's answer: the subscriber a test built (and wraps)."""
    return subscriber


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_marks_registered_mailboxes_due_with_the_highest_history_id(db, sessions, pubsub):
    tenant_a, tenant_b = await db.tenant(), await db.tenant()
    shared_a = await db.mailbox(tenant_a, "shared@example.com", history_id=100)
    shared_b = await db.mailbox(tenant_b, "shared@example.com", history_id=100)
    other = await db.mailbox(tenant_a, "other@example.com", history_id=100)
    quiet = await db.mailbox(tenant_a, "quiet@example.com", history_id=100)

    pubsub.publish([
        notification("shared@example.com", 150),
        notification("SHARED@example.com", 170),  # addresses are case-insensitive
        notification("shared@example.com", 160),
        {"emailAddress": "other@example.com", "historyId": 120},  # a JSON number is accepted too
    ])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 4)
    for mailbox_id in (shared_a, shared_b):
        row = await db.row(mailbox_id)
        assert row.notified_history_id == 170
        assert row.sync_due_at is not None
        assert row.last_notification_at is not None
        assert row.history_id == 100  # ingest never touches the synced id
    row = await db.row(other)
    assert (row.notified_history_id, row.sync_due_at is not None) == (120, True)
    row = await db.row(quiet)
    assert (row.notified_history_id, row.sync_due_at, row.last_notification_at) == (None, None, None)
    assert worker.stats.accepted == 4
    assert worker.stats.nacked == 0


async def test_duplicates_and_out_of_order_never_lower_the_notified_id(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100, notified_history_id=500)

    pubsub.publish([notification("a@example.com", n) for n in (300, 200, 500, 500)])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 4)
        assert (await db.row(mailbox)).notified_history_id == 500
        # Separate batches: a higher id, then a lower one arriving later.
        pubsub.publish([notification("a@example.com", 600)])
        await eventually(lambda: worker.stats.acked >= 5)
        pubsub.publish([notification("a@example.com", 400), notification("a@example.com", 600)])
        await eventually(lambda: worker.stats.acked >= 7)
    assert (await db.row(mailbox)).notified_history_id == 600


async def test_a_burst_of_500_notifications_is_one_pending_sync(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "busy@example.com", history_id=1000)

    pubsub.publish([notification("busy@example.com", 1000 + n) for n in range(1, 501)])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 500)
    row = await db.row(mailbox)
    assert row.notified_history_id == 1500
    assert row.sync_due_at is not None
    # The first batch set the due time; later ones kept it (COALESCE), so the
    # sync worker sees one due mailbox, not 500 jobs.
    assert row.sync_due_at <= row.last_notification_at
    assert worker.stats.accepted == 500
    assert worker.stats.marked_due == worker.stats.batches < 500


async def test_notifications_not_newer_than_the_synced_id_do_not_mark_due(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "synced@example.com", history_id=1000)

    pubsub.publish([notification("synced@example.com", 900), notification("synced@example.com", 1000)])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 2)
    row = await db.row(mailbox)
    assert row.notified_history_id == 1000
    assert row.sync_due_at is None
    assert row.last_notification_at is not None
    assert worker.stats.marked_due == 0


async def test_unknown_and_inactive_mailboxes_are_acked_and_counted(db, sessions, pubsub):
    tenant = await db.tenant()
    stopped = await db.mailbox(tenant, "stopped@example.com", state=MailboxState.STOPPED)
    revoked = await db.mailbox(tenant, "revoked@example.com", state=MailboxState.AUTH_FAILED)
    unknown_before = metric("mailwatch_ingest_messages_total", source="pull", outcome="unknown_mailbox")
    inactive_before = metric("mailwatch_ingest_messages_total", source="pull", outcome="inactive_mailbox")

    pubsub.publish([
        notification("nobody@example.com", 5),
        notification("stopped@example.com", 500),
        notification("revoked@example.com", 500),
    ])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 3)
    assert (worker.stats.unknown, worker.stats.inactive, worker.stats.accepted) == (1, 2, 0)
    for mailbox_id in (stopped, revoked):
        row = await db.row(mailbox_id)
        assert (row.notified_history_id, row.sync_due_at, row.last_notification_at) == (None, None, None)
    assert metric("mailwatch_ingest_messages_total", source="pull", outcome="unknown_mailbox") == unknown_before + 1
    assert metric("mailwatch_ingest_messages_total", source="pull", outcome="inactive_mailbox") == inactive_before + 2
    assert pubsub.pull_all(timeout=1.0) == []


MALFORMED = [
    (b"not json at all", "not_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"historyId": "1"}', "missing_email_address"),
    (b'{"emailAddress": "a@example.com"}', "missing_history_id"),
    (b'{"emailAddress": "a@example.com", "historyId": true}', "bad_history_id"),
    (b'{"emailAddress": "a@example.com", "historyId": "12x"}', "bad_history_id"),
    (b'{"emailAddress": "not an address", "historyId": "1"}', "bad_email_address"),
    (b'{"emailAddress": "a@example.com", "historyId": "1", "pad": "' + b"x" * 100_000 + b'"}', "too_large"),
    (b"\xff\xfe\xfd", "not_json"),
]


async def test_malformed_messages_are_acked_counted_and_kept(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    before = metric("mailwatch_ingest_malformed_total", source="pull", reason="bad_history_id")

    pubsub.publish([data for data, _ in MALFORMED] + [notification("a@example.com", 101)])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= len(MALFORMED) + 1)
        assert worker.running  # malformed input never stops the puller
    assert worker.stats.malformed == len(MALFORMED)
    assert worker.stats.accepted == 1
    assert (await db.row(mailbox)).notified_history_id == 101

    rows = await db.malformed()
    assert sorted(r.reason for r in rows) == sorted(reason for _, reason in MALFORMED)
    assert {r.source for r in rows} == {pubsub.subscription}
    assert all(r.pubsub_message_id for r in rows)
    by_reason = {r.reason: r for r in rows}
    assert len(by_reason["too_large"].data) == MALFORMED_DATA_MAX_BYTES
    assert by_reason["not_json"].data in (b"not json at all", b"\xff\xfe\xfd")
    assert metric("mailwatch_ingest_malformed_total", source="pull", reason="bad_history_id") == before + 2
    assert pubsub.pull_all(timeout=1.0) == []


async def test_acked_messages_are_not_redelivered_after_the_ack_deadline(db, sessions, pubsub):
    tenant = await db.tenant()
    await db.mailbox(tenant, "a@example.com")
    pubsub.publish([notification("a@example.com", 200 + n) for n in range(20)] + [b"garbage"])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 21)

    async def nothing_redelivered() -> bool:
        return await asyncio.to_thread(pubsub.pull_all, 0.5) == []

    # The time is what is under test: an unacknowledged message would come back once its ack
    # deadline passed, so nothing may come back for the deadline and two seconds more.
    await stays(nothing_redelivered, ACK_DEADLINE_SECONDS + 2, what="no redelivery after the ack deadline")


async def test_database_unreachable_nothing_is_acked_and_messages_come_back(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    pubsub.publish([notification("a@example.com", 300), notification("a@example.com", 301), b"garbage"])

    dead_engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        async with ingestor(session_factory(dead_engine), pubsub) as broken:
            await eventually(lambda: broken.stats.write_failures >= 2)
            assert not broken.healthy
    finally:
        await dead_engine.dispose()
    assert broken.stats.acked == 0
    assert broken.stats.nacked >= 3
    assert (await db.row(mailbox)).notified_history_id is None
    assert await db.malformed() == []

    # Nacked, so Pub/Sub redelivers them to a worker whose database is back.
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 3)
        assert worker.healthy
    row = await db.row(mailbox)
    assert (row.notified_history_id, row.sync_due_at is not None) == (301, True)
    assert [r.reason for r in await db.malformed()] == ["not_json"]


class _Wrapped:
    """The real subscriber, passed through; subclasses change one call."""

    def __init__(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def pull(self, *args, **kw):
        return self._subscriber.pull(*args, **kw)

    def acknowledge(self, *args, **kw):
        return self._subscriber.acknowledge(*args, **kw)

    def modify_ack_deadline(self, *args, **kw):
        return self._subscriber.modify_ack_deadline(*args, **kw)

    def close(self):
        return self._subscriber.close()


class _FlakySubscriber(_Wrapped):
    """Its first acknowledge is lost (as in a crash before ack)."""

    lost_acks = 0

    async def acknowledge(self, *args, **kw):
        if self.lost_acks == 0:
            self.lost_acks += 1
            raise ConnectionError("simulated crash between write and ack")
        await self._subscriber.acknowledge(*args, **kw)


async def test_lost_ack_means_redelivery_and_the_write_is_idempotent(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    pubsub.publish([notification("a@example.com", 250)])

    flaky = _FlakySubscriber(await connect())
    async with ingestor(sessions, pubsub, subscriber_factory=lambda: returned(flaky)) as worker:
        await eventually(lambda: worker.stats.ack_failures == 1)
        first = await db.row(mailbox)
        assert first.notified_history_id == 250
        # Redelivered after the ack deadline; recorded again, changing nothing.
        await eventually(lambda: worker.stats.acked == 1, timeout=ACK_DEADLINE_SECONDS + 20)
    second = await db.row(mailbox)
    assert worker.stats.accepted == 2
    assert second.notified_history_id == 250
    assert second.sync_due_at == first.sync_due_at


class _GatedSubscriber(_Wrapped):
    """Holds the first pull until released, to stop() while a batch is in flight."""

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__(subscriber)
        self.pulling = asyncio.Event()
        self.release = asyncio.Event()

    async def pull(self, subscription, max_messages, timeout):
        if not self.release.is_set():
            self.pulling.set()
            await asyncio.wait_for(self.release.wait(), 30)
            timeout = 10
        return await self._subscriber.pull(subscription, max_messages, timeout)


async def test_stop_finishes_the_in_flight_batch(db, sessions, pubsub):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    pubsub.publish([notification("a@example.com", 777)])
    gated = _GatedSubscriber(await connect())
    worker = ingestor(sessions, pubsub, subscriber_factory=lambda: returned(gated))
    await worker.start()
    await asyncio.wait_for(gated.pulling.wait(), 10)
    stopping = asyncio.create_task(worker.stop())
    # Stopping waits for the batch in flight, held at the gate: it cannot finish meanwhile.
    await stays(lambda: not stopping.done(), 0.3, what="stop waits for the batch in flight")
    gated.release.set()
    await asyncio.wait_for(stopping, 30)
    assert not worker.running
    assert worker.stats.acked == 1
    assert (await db.row(mailbox)).notified_history_id == 777


async def test_pull_and_ack_run_on_the_event_loop_and_stop_closes_the_channel(db, sessions, pubsub):
    """No worker thread per call (so none is left behind), and stop() closes the channel it pulled on."""
    tenant = await db.tenant()
    await db.mailbox(tenant, "a@example.com")
    subscriber = await connect()
    threads_before = set(threading.enumerate())
    pubsub.publish([notification("a@example.com", 200 + n) for n in range(5)])
    async with ingestor(sessions, pubsub, subscriber_factory=lambda: returned(subscriber)) as worker:
        await eventually(lambda: worker.stats.acked >= 5)
    assert [thread.name for thread in set(threading.enumerate()) - threads_before] == []
    with pytest.raises(grpc.aio.UsageError):
        await subscriber.pull(pubsub.subscription, 1, 1.0)


async def test_disabled_ingestor_does_not_pull(sessions, pubsub):
    pubsub.publish([notification("a@example.com", 1)])
    worker = ingestor(sessions, pubsub, enabled=False)
    await worker.start()
    assert not worker.running
    await worker.stop()
    assert worker.status()["enabled"] is False
    assert len(await asyncio.to_thread(pubsub.pull_all, 2.0)) == 1


async def test_each_pulled_notification_and_batch_write_is_timed_by_stage(db, sessions, pubsub):
    """mailwatch_pipeline_stage_seconds: Pub/Sub's publish time to the pull, per message, and
    the batch write, per batch (what benchmarks/pipeline.py splits a change's latency with)."""
    from prometheus_client import REGISTRY

    def count(stage: str) -> float:
        return REGISTRY.get_sample_value("mailwatch_pipeline_stage_seconds_count", {"stage": stage}) or 0.0

    def total(stage: str) -> float:
        return REGISTRY.get_sample_value("mailwatch_pipeline_stage_seconds_sum", {"stage": stage}) or 0.0

    tenant = await db.tenant()
    await db.mailbox(tenant, "timed@example.com", history_id=100)
    before = {stage: (count(stage), total(stage)) for stage in ("published_to_pulled", "pulled_to_recorded")}
    pubsub.publish([notification("timed@example.com", 101 + n) for n in range(3)])
    async with ingestor(sessions, pubsub) as worker:
        await eventually(lambda: worker.stats.acked >= 3)
    assert count("published_to_pulled") - before["published_to_pulled"][0] == 3
    assert count("pulled_to_recorded") - before["pulled_to_recorded"][0] >= 1
    assert total("pulled_to_recorded") > before["pulled_to_recorded"][1]  # a write takes some time
    assert 0 <= total("published_to_pulled") - before["published_to_pulled"][1] < 3 * 60  # seconds, not ms
