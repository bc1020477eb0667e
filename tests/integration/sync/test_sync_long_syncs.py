"""Long syncs and resyncs keep their lease: two replicas, a short lease, slow Gmail calls —
exactly one of them does the work, once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mailwatch.config import SyncSettings
from mailwatch.workers.sync import SyncWorker
from tests.fixtures.pipeline import (
    collect, eventually, gmail_notification, message_events, publish_raw, types,
)
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

# The heartbeat extends the lease every third of it: a 6 s lease survives a beat up to 4 s
# late (a loaded 2-core host delayed a 2 s lease's beats past it once, and the second
# replica fetched the slow page again).
LEASE_SECONDS = 6.0
SLOW = 15.0  # seconds: longer than the lease, so only a kept lease stops a second replica


def calls(sim, email: str, method: str) -> int:
    return sim.counters()["calls"].get(email, {}).get(method, 0)


@contextlib.asynccontextmanager
async def two_replicas(service):
    """Two sync workers with their own owner names sharing the service's database and Gmail client."""
    app = service.app
    replicas = [SyncWorker(settings=SyncSettings(lease_seconds=LEASE_SECONDS), sessions=app.sessions, gmail=app.gmail,
                           secret_box=app.secret_box, owner=f"replica-{n}", loop_seconds=0.05) for n in (1, 2)]
    tasks = [asyncio.create_task(replica.run()) for replica in replicas]
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
        await asyncio.gather(*tasks)


async def test_resync_of_a_100k_mailbox_with_two_replicas_and_a_short_lease(make_service):
    email = "big@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, email), metadata=auth)
        seeded = sim.seed_messages(email, 100_000)  # predates the watch: its history is gone (404)
        sim.add_latency("users.messages.list", 0.3)  # what walking 200 pages would cost
        sim.add_latency("users.getProfile", SLOW)
        sim.reset_counters()
        publish_raw(service.topic, [gmail_notification(email, seeded["historyId"])])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)

        async with two_replicas(service):
            events = await collect(service, auth, lambda ev: "RESYNCED" in types(ev), timeout=90)
        assert types(events).count("RESYNCED") == 1 and types(events).count("RESYNC_REQUIRED") == 1
        assert events[-1].attributes["message_count"] == "100000"
        assert events[-1].history_id == seeded["historyId"]
        # One replica resynced, once; nobody walked messages.list to count.
        assert calls(sim, email, "users.getProfile") == 1
        assert calls(sim, email, "users.messages.list") == 0


async def test_a_slow_history_page_is_fetched_once_with_two_replicas(make_service):
    email = "slow@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, email), metadata=auth)
        sim.advance_clock(2)
        added = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"]} for _ in range(3)])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        sim.add_latency("users.history.list", SLOW)
        sim.reset_counters()

        async with two_replicas(service):
            events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 3, timeout=90)
        assert [m for _, m, _ in message_events(events)] == [m["id"] for m in added]
        assert calls(sim, email, "users.history.list") == 1
