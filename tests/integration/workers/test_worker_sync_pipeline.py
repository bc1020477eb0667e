"""The change pipeline in one process: Pub/Sub ingest → sync → change log → StreamChanges,
against real Postgres, the Pub/Sub emulator and the Gmail simulator."""

from __future__ import annotations


import psycopg
import pytest

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import claims_one, collect, gmail_notification, message_events, publish_raw, types
from tests.fixtures.rpc import oauth_request, sa_request
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration


def history_calls(sim, email) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.history.list", 0)


async def test_changes_reach_the_stream_in_history_order(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "flow@example.com"), metadata=auth)
    m1 = sim.insert_message("flow@example.com", label_ids=["INBOX", "UNREAD"])
    m2 = sim.insert_message("flow@example.com", label_ids=["INBOX"])
    sim.modify_labels("flow@example.com", m1["id"], add=["STARRED"], remove=["UNREAD"])
    sim.delete_message("flow@example.com", m2["id"])

    expected = [
        ("EVENT_TYPE_MESSAGE_ADDED", m1["id"], ("INBOX", "UNREAD")),
        ("EVENT_TYPE_MESSAGE_ADDED", m2["id"], ("INBOX",)),
        ("EVENT_TYPE_LABELS_ADDED", m1["id"], ("STARRED",)),
        ("EVENT_TYPE_LABELS_REMOVED", m1["id"], ("UNREAD",)),
        ("EVENT_TYPE_MESSAGE_DELETED", m2["id"], ()),
    ]
    events = await collect(service, auth, lambda ev: len(message_events(ev)) >= len(expected))
    got = message_events(events)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    # Gmail's history gives an added message no labels: they are its labels when the sync
    # asked (messages.get), before or after the later change; a message deleted by then has none.
    assert got[0][2] in {("INBOX", "UNREAD"), ("INBOX", "STARRED")}
    assert got[1][2] in {("INBOX",), ()}
    assert [g[2] for g in got[2:4]] == [e[2] for e in expected[2:4]]
    assert types(events)[0] == "WATCH_STARTED"
    assert all(e.mailbox_id == mailbox.id and e.email_address == "flow@example.com" for e in events)
    # (The changes come so fast that Gmail's 1/s cap may drop their notifications: a
    # NOTIFICATIONS_MISSED may then precede them, positioned at the synced history id.)
    changes = {resources_pb2.EVENT_TYPE_MESSAGE_ADDED, resources_pb2.EVENT_TYPE_MESSAGE_DELETED,
               resources_pb2.EVENT_TYPE_LABELS_ADDED, resources_pb2.EVENT_TYPE_LABELS_REMOVED}
    history_ids = [e.history_id for e in events if e.type in changes]
    assert history_ids == sorted(history_ids) and history_ids[0] == m1["historyId"]
    cursors = [e.cursor for e in events]
    assert len(set(cursors)) == len(cursors)

    fetched = await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth)
    assert fetched.history_id >= history_ids[-1]
    assert fetched.last_sync_time.seconds > 0  # (the watch notification may race registration: see ingest tests)


async def test_label_filter_decides_what_the_tenant_sees(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    await service.mailboxes.RegisterMailbox(sa_request(sim, "filter@example.com", label_ids=["INBOX"]), metadata=auth)
    spam = sim.insert_message("filter@example.com", label_ids=["SPAM"])
    inbox = sim.insert_message("filter@example.com", label_ids=["INBOX"])
    sim.modify_labels("filter@example.com", inbox["id"], remove=["INBOX"])  # leaves the watched set: reported
    sim.modify_labels("filter@example.com", spam["id"], add=["STARRED"])  # never in the set: not reported
    marker = sim.insert_message("filter@example.com", label_ids=["INBOX"])
    events = await collect(service, auth, lambda ev: marker["id"] in [e.message_id for e in ev])
    assert [(kind, mid) for kind, mid, _ in message_events(events)] == [
        ("EVENT_TYPE_MESSAGE_ADDED", inbox["id"]),
        ("EVENT_TYPE_LABELS_REMOVED", inbox["id"]),
        ("EVENT_TYPE_MESSAGE_ADDED", marker["id"]),
    ]


def all_recorded(service, at_least: int) -> bool:
    """At least `at_least` notifications received, and every one received written and acked
    (`received` is counted before its batch is written)."""
    stats = service.app.ingestor.stats
    return stats.received >= at_least and stats.acked + stats.nacked >= stats.received


async def test_notification_burst_costs_one_sync(make_service, database_url):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "burst@example.com"), metadata=auth)
        for _ in range(5):
            sim.insert_message("burst@example.com", label_ids=["INBOX"])
        current = sim.history_id("burst@example.com")
        # 300 notifications for the same mailbox: duplicates and older ids, in shuffled order.
        publish_raw(service.topic, [gmail_notification("burst@example.com", current - (n % 7)) for n in range(300)])
        await eventually(lambda: all_recorded(service, 300))
        sim.reset_counters()

        await claims_one(service.app.sync_worker)
        assert await service.app.sync_worker.run_once() == 0
        assert history_calls(sim, "burst@example.com") == 1
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 5)
        assert len(message_events(events)) == 5

        # Redelivered / stale notifications cost no Gmail call at all.
        publish_raw(service.topic, [gmail_notification("burst@example.com", current) for _ in range(20)])
        await eventually(lambda: all_recorded(service, 320))
        assert await service.app.sync_worker.run_once() == 0
        assert history_calls(sim, "burst@example.com") == 1


async def test_expired_history_triggers_a_full_resync(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "old@example.com"), metadata=auth)
        sim.advance_clock(2)  # past Gmail's one-notification-per-second window of the watch
        for _ in range(3):
            sim.insert_message("old@example.com", label_ids=["INBOX"])
        sim.expire_history("old@example.com", sim.history_id("old@example.com"))
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        await claims_one(service.app.sync_worker)

        events = await collect(service, auth, lambda ev: "RESYNCED" in types(ev))
        assert types(events)[-2:] == ["RESYNC_REQUIRED", "RESYNCED"]
        resynced = events[-1]
        assert resynced.history_id == sim.history_id("old@example.com")
        assert resynced.attributes["message_count"] == "3"

        # Afterwards, changes flow from the new baseline.
        sim.advance_clock(2)
        fresh = sim.insert_message("old@example.com", label_ids=["INBOX"])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 2)
        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: fresh["id"] in [e.message_id for e in ev])
        assert types(events)[-1] == "MESSAGE_ADDED"


async def test_revoked_credentials_stop_gmail_calls_until_registered_again(make_service):
    async with make_service(poll_interval_seconds=1.0) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        request, _, _ = oauth_request(sim, "revoked@example.com")
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        sim.revoke_user("revoked@example.com")
        missed = sim.insert_message("revoked@example.com", label_ids=["INBOX"])

        events = await collect(service, auth, lambda ev: "AUTH_FAILED" in types(ev))
        failed = await service.mailboxes.GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
        )
        assert failed.state == resources_pb2.MAILBOX_STATE_AUTH_FAILED
        assert failed.last_error.reason == "GMAIL_AUTH_FAILED"

        # No hammering: more changes and polls, but no more Gmail calls for this user.
        calls = sim.counters()["calls"]["revoked@example.com"]
        sim.insert_message("revoked@example.com", label_ids=["INBOX"])
        await service.app.poll_worker.run_once()
        await service.app.sync_worker.run_once()
        assert sim.counters()["calls"]["revoked@example.com"] == calls

        # Good credentials again: ACTIVE, and what happened meanwhile is delivered.
        sim.restore_user("revoked@example.com")
        request, _, _ = oauth_request(sim, "revoked@example.com")
        revived = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert revived.id == mailbox.id and revived.state == resources_pb2.MAILBOX_STATE_ACTIVE
        events = await collect(service, auth, lambda ev: missed["id"] in [e.message_id for e in ev])
        assert types(events).count("AUTH_FAILED") == 1


@pytest.mark.parametrize("fault", ["rateLimitExceeded", "userRateLimitExceeded", "backendError"])
async def test_gmail_errors_back_off_and_lose_nothing(make_service, fault):
    async with make_service() as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "busy@example.com"), metadata=auth)
        sim.inject_fault(fault, method="users.history.list", count=2, retry_after=1)
        message = sim.insert_message("busy@example.com", label_ids=["INBOX"])

        async def backing_off():
            got = await service.mailboxes.GetMailbox(
                mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
            )
            return got.last_error.reason.startswith("GMAIL_")

        await eventually(backing_off)
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev], timeout=40)
        assert [m for _, m, _ in message_events(events)] == [message["id"]]
        recovered = await service.mailboxes.GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
        )
        assert not recovered.last_error.reason


async def test_project_quota_429_backs_off_and_loses_nothing(make_service):
    """Gmail's per-project limit (429 rateLimitExceeded, no retry time) is a rate limit like the others."""
    async with make_service() as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "crowded@example.com"), metadata=auth)
        sim.configure(project_quota_units_per_minute=1)  # the registration's units already fill the minute
        message = sim.insert_message("crowded@example.com", label_ids=["INBOX"])

        async def mailbox_now():
            return await service.mailboxes.GetMailbox(
                mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
            )

        async def backing_off():
            return (await mailbox_now()).last_error.reason == "GMAIL_RATE_LIMITED"

        await eventually(backing_off)
        limited = await mailbox_now()
        assert limited.state == resources_pb2.MAILBOX_STATE_ACTIVE  # not a terminal state
        assert "Queries per minute" in limited.last_error.message
        sim.configure(project_quota_units_per_minute=None)
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev], timeout=40)
        assert [m for _, m, _ in message_events(events)] == [message["id"]]
        assert not (await mailbox_now()).last_error.reason


async def test_retry_after_is_honoured(make_service, database_url):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "later@example.com"), metadata=auth)
        sim.inject_fault("rateLimitExceeded", method="users.history.list", count=1, retry_after=120)
        sim.advance_clock(2)
        sim.insert_message("later@example.com", label_ids=["INBOX"])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        await claims_one(service.app.sync_worker)
        with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
            wait = conn.execute(
                "SELECT extract(epoch FROM backoff_until - now()) FROM mailboxes WHERE id = %s", (mailbox.id,)
            ).fetchone()[0]
        # Gmail named its retry time (simulated clock, 2 s ahead of ours) in the message.
        assert 100 < wait <= 123
        assert await service.app.sync_worker.run_once() == 0  # not before Gmail's retry time


async def test_dropped_notifications_are_covered_by_polling(make_service):
    async with make_service(poll_interval_seconds=1.0) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "quiet@example.com"), metadata=auth)
        sim.set_notification_faults(drop_fraction=1.0)
        inserted = [sim.insert_message("quiet@example.com", label_ids=["INBOX"])["id"] for _ in range(3)]
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 3, timeout=20)
        assert [m for _, m, _ in message_events(events)] == inserted


async def test_malformed_pubsub_data_is_kept_and_does_not_stop_ingest(service, database_url):
    _, auth = await service.new_tenant()
    sim = service.sim
    await service.mailboxes.RegisterMailbox(sa_request(sim, "robust@example.com"), metadata=auth)
    publish_raw(service.topic, [b"not json", b'{"emailAddress": 5}', b"\xff" * 10, b'{"historyId": "1"}'])
    message = sim.insert_message("robust@example.com", label_ids=["INBOX"])
    await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
    await eventually(lambda: service.app.ingestor.stats.malformed >= 4)
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM malformed_notifications")]
    assert len(reasons) == 4 and all(reasons)


async def test_unknown_and_stopped_mailboxes_are_ignored(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "gone@example.com"), metadata=auth)
    await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox.id), metadata=auth)
    sim.reset_counters()
    publish_raw(service.topic, [gmail_notification("gone@example.com", 10**9), gmail_notification("who@example.com", 5)])
    await eventually(lambda: service.app.ingestor.stats.unknown + service.app.ingestor.stats.inactive >= 2)
    assert await service.app.sync_worker.run_once() == 0
    assert sim.counters()["totalCalls"] == 0


async def test_a_notification_wakes_the_sync_worker_at_once(make_service):
    """Ingest wakes the in-process sync worker: no waiting for its next round."""
    async with make_service(poll_enabled=False) as service:
        worker = service.app.sync_worker
        worker.loop_seconds = 3600  # only a wake-up can start a sync now
        sleeps = worker.sleeps
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "prompt@example.com"), metadata=auth)
        # Once the worker goes to sleep again, it sleeps for the hour (a sleep begun before used the old length).
        await eventually(lambda: worker.sleeps > sleeps, what="the sync worker asleep for the hour")
        sim.advance_clock(2)  # past the watch notification's one-per-second window
        message = sim.insert_message("prompt@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev], timeout=10)
        assert message_events(events)[-1][1] == message["id"]
