"""A notification that names a history id Gmail's history.list does not show.

Gmail's history can trail its own notification for a moment: the mailbox is
looked at again with a bounded backoff, never in a hot loop. A notified id
that stays beyond Gmail's history (a forged or corrupt 2^62) stops keeping the
mailbox due after those looks, and is counted and logged as suspicious.

The service's clock is an `OffsetClock`, moved past each backoff, and the sync
worker is driven by hand, so every history.list call is accounted for.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY

from mailwatch.clock import OffsetClock
from mailwatch.sync.mailbox import CATCH_UP_ATTEMPTS
from tests.fixtures.pipeline import (
    claims_one, collect, eventually, gmail_notification, message_events, publish_raw,
)
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

PAST_ANY_CATCH_UP_BACKOFF = timedelta(minutes=2)


def history_calls(sim, email) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.history.list", 0)


def scheduling(database_url, mailbox_id) -> dict:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT sync_due_at, backoff_until, sync_attempts, notified_history_id, history_id"
            " FROM mailboxes WHERE id = %s",
            (mailbox_id,),
        ).fetchone()
    return dict(zip(("sync_due_at", "backoff_until", "sync_attempts", "notified_history_id", "history_id"), row))


@contextlib.asynccontextmanager
async def hand_driven(make_service, address):
    """A service whose sync worker and clock the test drives, with `address`
    registered, whatever registration left due synced, and the simulator's
    counters at zero. Yields (service, auth, clock, mailbox)."""
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False) as service:
        _, auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, address), metadata=auth)
        while await service.app.sync_worker.run_once():
            clock.advance(PAST_ANY_CATCH_UP_BACKOFF)
        service.sim.reset_counters()
        yield service, auth, clock, mailbox


def suspicious_count() -> float:
    return REGISTRY.get_sample_value("mailwatch_suspicious_notifications_total") or 0.0


async def test_an_absurd_notified_history_id_stops_being_due_after_bounded_looks(make_service, database_url):
    address = "absurd@example.com"
    async with hand_driven(make_service, address) as (service, auth, clock, mailbox):
        sim, worker = service.sim, service.app.sync_worker
        suspicious_before = suspicious_count()

        publish_raw(service.topic, [gmail_notification(address, 2**62)])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)

        for look in range(1, CATCH_UP_ATTEMPTS + 1):
            await claims_one(worker)
            row = scheduling(database_url, mailbox.id)
            assert row["sync_due_at"] is not None and row["sync_attempts"] == look
            assert row["backoff_until"] > clock.now()  # backing off: not due again at once
            assert await worker.run_once() == 0  # no hot loop
            clock.advance(PAST_ANY_CATCH_UP_BACKOFF)
        await claims_one(worker)  # the last look: Gmail still has no such history

        row = scheduling(database_url, mailbox.id)
        assert row["sync_due_at"] is None and row["sync_attempts"] == 0
        assert row["notified_history_id"] == row["history_id"] < 2**62
        clock.advance(PAST_ANY_CATCH_UP_BACKOFF)
        assert await worker.run_once() == 0
        assert history_calls(sim, address) == CATCH_UP_ATTEMPTS + 1
        assert suspicious_count() == suspicious_before + 1

        # The mailbox works normally afterwards.
        sim.advance_clock(2)
        message = sim.insert_message(address, label_ids=["INBOX"])
        await eventually(lambda: scheduling(database_url, mailbox.id)["sync_due_at"] is not None)
        await claims_one(worker)
        events = await collect(service, auth, lambda ev: message["id"] in [m for _, m, _ in message_events(ev)])
        assert [m for _, m, _ in message_events(events)] == [message["id"]]
        assert scheduling(database_url, mailbox.id)["sync_due_at"] is None


async def test_a_notification_ahead_of_history_list_is_looked_at_again_with_backoff(make_service, database_url):
    address = "ahead@example.com"
    async with hand_driven(make_service, address) as (service, auth, clock, mailbox):
        sim, worker = service.sim, service.app.sync_worker
        suspicious_before = suspicious_count()

        # Gmail's notification got here before its history.list shows the change.
        announced = sim.history_id(address) + 1
        publish_raw(service.topic, [gmail_notification(address, announced)])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        await claims_one(worker)
        row = scheduling(database_url, mailbox.id)
        assert row["sync_due_at"] is not None and row["backoff_until"] > clock.now()
        assert await worker.run_once() == 0  # waits for the backoff instead of asking again at once
        assert history_calls(sim, address) == 1

        # History catches up; the next look (after the backoff) finds it. Gmail's own notification
        # of this message is dropped: past its one-per-second window (always so on a loaded host)
        # it would raise notified_history_id past `announced` before the look below.
        sim.set_notification_faults(drop_fraction=1.0, email=address)
        sim.advance_clock(2)
        message = sim.insert_message(address, label_ids=["INBOX"])
        assert sim.history_id(address) >= announced
        clock.advance(PAST_ANY_CATCH_UP_BACKOFF)
        await claims_one(worker)
        events = await collect(service, auth, lambda ev: message["id"] in [m for _, m, _ in message_events(ev)])
        assert [m for _, m, _ in message_events(events)] == [message["id"]]
        row = scheduling(database_url, mailbox.id)
        assert row["sync_due_at"] is None and row["sync_attempts"] == 0 and row["backoff_until"] is None
        assert row["notified_history_id"] == announced  # a genuine notification is not treated as bogus
        assert history_calls(sim, address) == 2
        assert suspicious_count() == suspicious_before
