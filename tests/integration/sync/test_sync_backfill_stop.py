"""StopMailbox halts a running backfill: no MESSAGE_EXISTING (and no BACKFILL_COMPLETED) is
appended for a mailbox once it is stopped, even by the batch in flight at the stop.

Real peers: the service in process, the Gmail simulator behind google-api-python-client,
the Python client library.
"""

from __future__ import annotations

import pytest

from mailwatch_client import AsyncMailwatchClient, BackfillRequest, BackfillState, EventType, MailboxState
from tests.fixtures.waiting import eventually, stays
from tests.integration.client.conftest import api_key_of, sa_credentials
from tests.integration.sync.test_sync_backfill import _collect_until

pytestmark = pytest.mark.integration

EXISTING = EventType.Value("EVENT_TYPE_MESSAGE_EXISTING")
COMPLETED = EventType.Value("EVENT_TYPE_BACKFILL_COMPLETED")
STOPPED = EventType.Value("EVENT_TYPE_MAILBOX_STOPPED")
GET_LATENCY = 0.5


@pytest.fixture
async def service(make_service):
    async with make_service(sync_backfill_units_per_minute=10_000_000) as running:
        yield running


async def test_stopping_the_mailbox_stops_its_backfill(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "stopped-backfill@example.com"
    credentials = sa_credentials(sim, address)
    sim.insert_messages([{"emailAddress": address, "labelIds": ["INBOX"]} for _ in range(60)])
    # Each messages.get is slow, so a batch is in flight when the mailbox is stopped.
    sim.add_latency("users.messages.get", GET_LATENCY, user=address)

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials, backfill=BackfillRequest(newest=100))

        async def listed():
            return (await client.get_mailbox(mailbox.id)).backfill.listed_count

        assert await eventually(listed, timeout=60) == 60
        assert (await client.stop_mailbox(mailbox.id)).state == MailboxState.Value("MAILBOX_STATE_STOPPED")
        at_stop = (await client.get_mailbox(mailbox.id)).backfill

        async def unchanged() -> bool:
            now = (await client.get_mailbox(mailbox.id)).backfill
            return (now.state, now.delivered_count, now.skipped_count) == \
                (BackfillState.Value("BACKFILL_STATE_DELIVERING"), at_stop.delivered_count, at_stop.skipped_count)

        # Twenty get latencies: a batch in flight at the stop (and any batch after it) would
        # have committed by then.
        await stays(unchanged, 20 * GET_LATENCY, what="the backfill delivers nothing more after the stop")
        events = await _collect_until(client, lambda seen: any(e.type == STOPPED for e in seen), timeout=60)

    assert not any(e.type == COMPLETED for e in events)
    assert sum(e.type == EXISTING for e in events) == at_stop.delivered_count < 60
