"""Backfill on registration (issue 25 item 1): the messages a mailbox already holds arrive as
MESSAGE_EXISTING events, oldest first, while the live stream carries on; every message once.

Real peers: the service in process (gRPC, Postgres, the Pub/Sub emulator), the Gmail simulator
behind the real google-api-python-client, the Python client library.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mailwatch_client import (
    AsyncMailwatchClient, BackfillRequest, BackfillState, EventType, InvalidArgumentError, MailboxState,
    ServiceAccountCredentials,
)
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

EXISTING = EventType.Value("EVENT_TYPE_MESSAGE_EXISTING")
ADDED = EventType.Value("EVENT_TYPE_MESSAGE_ADDED")
DELETED = EventType.Value("EVENT_TYPE_MESSAGE_DELETED")
COMPLETED = EventType.Value("EVENT_TYPE_BACKFILL_COMPLETED")


async def _collect_until(client, done, *, timeout: float = 60.0) -> list:
    """Every event from the earliest, until `done(events)` holds."""
    events: list = []

    async def read() -> None:
        async with client.stream_changes(start="earliest") as stream:
            async for event in stream:
                events.append(event)
                if done(events):
                    return

    await asyncio.wait_for(read(), timeout)
    return events


@pytest.fixture
async def service(make_service):
    """The service with backfills unpaced (the pace has a test of its own)."""
    async with make_service(sync_backfill_units_per_minute=10_000_000) as running:
        yield running


def _completed(events) -> bool:
    return any(e.type == COMPLETED for e in events)


async def test_a_backfill_of_500_with_20_live_arrivals_delivers_each_message_once(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "backfill@example.com"
    credentials = sa_credentials(sim, address)
    label = sim.create_label(address, "Projects")
    items = [{"emailAddress": address, "labelIds": ["INBOX", label] if n % 5 == 0 else ["INBOX"],
              "subject": f"old {n}"} for n in range(500)]
    old = sim.insert_messages(items)
    labels_of = {m["id"]: sorted(item["labelIds"]) for m, item in zip(old, items)}
    # Slow enough lookups that the backfill is still delivering when the live mail arrives.
    sim.add_latency("users.messages.get", 0.3, user=address)

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        registered = await client.register_mailbox(
            address, credentials=credentials, message_metadata=["Subject"], backfill=BackfillRequest(newest=500))
        assert registered.backfill.state == BackfillState.Value("BACKFILL_STATE_LISTING")

        async def delivering():
            mailbox = await client.get_mailbox(registered.id)
            return mailbox if mailbox.backfill.delivered_count >= 100 else None

        midway = await eventually(delivering, timeout=60, what="the backfill delivering")
        assert midway.backfill.state == BackfillState.Value("BACKFILL_STATE_DELIVERING")
        assert midway.backfill.listed_count == 500 and midway.backfill.delivered_count < 500
        live = [sim.insert_message(address, label_ids=["INBOX"], subject=f"live {n}")["id"] for n in range(20)]

        def everything(events) -> bool:
            return _completed(events) and {e.message_id for e in events if e.type == ADDED} >= set(live)

        events = await _collect_until(client, everything, timeout=120)
        done = await client.get_mailbox(registered.id)
        [listed] = [m async for m in client.iter_mailboxes()]
        assert listed.backfill == done.backfill, "ListMailboxes shows the backfill as GetMailbox does"

    existing = [e for e in events if e.type == EXISTING]
    added = [e for e in events if e.type == ADDED]
    assert [e.message_id for e in existing] == [m["id"] for m in old], "the old messages, oldest first, once each"
    assert [e.message_id for e in added] == live, "the live ones as MESSAGE_ADDED, once each, in arrival order"
    assert all(sorted(e.label_ids) == labels_of[e.message_id] for e in existing)
    assert all(e.thread_id for e in existing)
    assert all({h.name: h.value for h in e.metadata.headers} == {"Subject": f"old {n}"}
               for n, e in enumerate(existing))
    [completed] = [e for e in events if e.type == COMPLETED]
    assert dict(completed.attributes) == {"listed": "500", "delivered": "500", "skipped": "0"}
    assert events.index(completed) > max(events.index(e) for e in existing)
    assert done.backfill.state == BackfillState.Value("BACKFILL_STATE_COMPLETED")
    assert (done.backfill.listed_count, done.backfill.delivered_count, done.backfill.skipped_count) == (500, 500, 0)
    assert done.backfill.complete_time.seconds > 0


async def test_live_messages_the_listing_also_found_are_delivered_once_as_added(service):
    """Messages that arrive after the watch and before the listing are in the listing too:
    the live sync delivers them (MESSAGE_ADDED) and the backfill skips them."""
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "overlap@example.com"
    credentials = sa_credentials(sim, address)
    old = [m["id"] for m in sim.insert_messages(
        [{"emailAddress": address, "labelIds": ["INBOX"], "subject": f"old {n}"} for n in range(30)])]
    since = Timestamp()
    since.FromDatetime(datetime.now(timezone.utc) - timedelta(days=1))
    sim.add_latency("users.messages.list", 3.0, user=address)  # the listing starts after the live mail

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials,
                                                backfill=BackfillRequest(since=since))
        live = [sim.insert_message(address, label_ids=["INBOX"], subject=f"live {n}")["id"] for n in range(10)]
        await _collect_until(client, _completed, timeout=90)
        # A marker that arrives after everything: once it is streamed, the live sync has passed
        # every message before it, so a duplicate would be in the log by then.
        marker = sim.insert_message(address, label_ids=["INBOX"])["id"]
        events = await _collect_until(client, lambda seen: any(e.message_id == marker for e in seen), timeout=60)
        done = await client.get_mailbox(mailbox.id)

    existing = [e.message_id for e in events if e.type == EXISTING]
    added = [e.message_id for e in events if e.type == ADDED]
    assert existing == old
    assert added == live + [marker]
    assert (done.backfill.listed_count, done.backfill.delivered_count, done.backfill.skipped_count) == (40, 30, 10)


async def test_deleted_and_filtered_messages_are_skipped(service):
    """A listed message deleted before its turn is not delivered (the live stream reports the
    deletion); the registration's label filter applies to the backfill too."""
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "filtered@example.com"
    credentials = sa_credentials(sim, address)
    label = sim.create_label(address, "Customers")
    items = [{"emailAddress": address, "labelIds": ["INBOX", label] if n % 2 else ["INBOX"]} for n in range(40)]
    old = [m["id"] for m in sim.insert_messages(items)]
    wanted = [i for n, i in enumerate(old) if n % 2]
    doomed = wanted[-3:]
    sim.add_latency("users.messages.get", 1.0, user=address)

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials, label_ids=[label],
                                                backfill=BackfillRequest(newest=100, label_ids=["INBOX"]))

        async def listed():
            return (await client.get_mailbox(mailbox.id)).backfill.listed_count

        assert await eventually(listed, timeout=60) == 40
        for message_id in doomed:
            sim.delete_message(address, message_id)
        events = await _collect_until(client, _completed, timeout=90)
        done = await client.get_mailbox(mailbox.id)

    assert [e.message_id for e in events if e.type == EXISTING] == [i for i in wanted if i not in doomed]
    assert (done.backfill.delivered_count, done.backfill.skipped_count) == (17, 23)


async def test_a_batch_registration_backfills_every_address(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    addresses = ["batch1@example.com", "batch2@example.com"]
    old = {}
    for address in addresses:
        sim.create_mailbox(address)
        old[address] = [m["id"] for m in sim.insert_messages(
            [{"emailAddress": address, "labelIds": ["INBOX"]} for _ in range(7)])]
    key = ServiceAccountCredentials(json_key=json.dumps(sim.create_service_account_key(project_id=TEST_PROJECT)))
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        results = await client.register_mailboxes(addresses, service_account=key,
                                                  backfill=BackfillRequest(newest=5))
        assert [r.status.code for r in results] == [0, 0]
        assert all(r.mailbox.backfill.state != BackfillState.Value("BACKFILL_STATE_UNSPECIFIED") for r in results)
        events = await _collect_until(client, lambda seen: sum(e.type == COMPLETED for e in seen) == 2, timeout=60)
    for address in addresses:
        assert [e.message_id for e in events if e.type == EXISTING and e.email_address == address] \
            == old[address][2:]


async def test_registering_again_with_the_same_backfill_keeps_it(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "again@example.com"
    credentials = sa_credentials(sim, address)
    old = [m["id"] for m in sim.insert_messages(
        [{"emailAddress": address, "labelIds": ["INBOX"]} for _ in range(12)])]
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        request = BackfillRequest(newest=10)
        mailbox = await client.register_mailbox(address, credentials=credentials, backfill=request)
        await _collect_until(client, _completed, timeout=60)
        again = await client.register_mailbox(address, credentials=credentials, backfill=request)
        assert again.backfill.state == BackfillState.Value("BACKFILL_STATE_COMPLETED")
        # Another request is a new backfill.
        await client.register_mailbox(address, credentials=credentials, backfill=BackfillRequest(newest=2))
        events = await _collect_until(
            client, lambda seen: sum(e.type == COMPLETED for e in seen) == 2, timeout=60)
    existing = [e.message_id for e in events if e.type == EXISTING]
    assert existing == old[2:] + old[-2:]
    assert mailbox.id == again.id


async def test_a_label_id_gmail_refuses_ends_the_backfill_and_not_the_mailbox(service):
    """A backfill label id the mailbox does not have: Gmail refuses the listing ("Invalid
    label"), so the backfill ends FAILED with a BACKFILL_COMPLETED naming the reason; the
    mailbox stays ACTIVE and its live stream carries on."""
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "nolabel@example.com"
    credentials = sa_credentials(sim, address)
    sim.insert_messages([{"emailAddress": address, "labelIds": ["INBOX"]} for _ in range(3)])
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials,
                                                backfill=BackfillRequest(newest=10, label_ids=["Label_99"]))
        events = await _collect_until(client, _completed, timeout=60)
        live = sim.insert_message(address, label_ids=["INBOX"])["id"]
        events = await _collect_until(client, lambda seen: any(e.message_id == live for e in seen), timeout=60)
        done = await client.get_mailbox(mailbox.id)
    [completed] = [e for e in events if e.type == COMPLETED]
    assert dict(completed.attributes) == {"listed": "0", "delivered": "0", "skipped": "0",
                                          "reason": "GMAIL_LABEL_REJECTED", "error": completed.attributes["error"]}
    assert "Label_99" in completed.attributes["error"] or "label" in completed.attributes["error"].lower()
    assert not [e for e in events if e.type == EXISTING]
    assert done.backfill.state == BackfillState.Value("BACKFILL_STATE_FAILED")
    assert done.backfill.last_error.reason == "GMAIL_LABEL_REJECTED"
    assert done.state == MailboxState.Value("MAILBOX_STATE_ACTIVE")
    assert [e.type for e in events if e.message_id == live] == [ADDED]


async def test_a_backfill_keeps_to_its_pace_of_gmail_units(make_service):
    """60 messages at 6,000 units a minute (100 a second): the listing (5 units) and the first
    batch of 50 lookups (250 units) go at once, the last 10 lookups only after those 255 units
    fit the rate (2.55 s). Slower is fine; faster would be a backfill running into Gmail's
    per-user lockout."""
    async with make_service(sync_backfill_units_per_minute=6_000) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        address = "paced@example.com"
        credentials = sa_credentials(sim, address)
        sim.insert_messages([{"emailAddress": address, "labelIds": ["INBOX"]} for _ in range(60)])
        async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
            started = time.monotonic()
            await client.register_mailbox(address, credentials=credentials, backfill=BackfillRequest(newest=60))
            events = await _collect_until(client, _completed, timeout=60)
            took = time.monotonic() - started
    assert sum(e.type == EXISTING for e in events) == 60
    assert took >= 2.5, f"60 lookups after a listing took {took:.2f} s: faster than 6,000 units a minute"
    calls = sim.counters()["calls"][address]
    assert calls.get("users.messages.list") == 1


@pytest.mark.parametrize(("backfill", "fields"), [
    (BackfillRequest(newest=-1), ["backfill.newest"]),
    (BackfillRequest(newest=100_001), ["backfill.newest"]),
    (BackfillRequest(), ["backfill"]),
    (BackfillRequest(newest=5, label_ids=["inbox", "Label_x", "INBOX", "INBOX"]),
     ["backfill.label_ids[0]", "backfill.label_ids[1]", "backfill.label_ids[3]"]),
    (BackfillRequest(since=Timestamp(seconds=int(datetime.now(timezone.utc).timestamp()) + 3600)),
     ["backfill.since"]),
    # Past the last moment a Timestamp can hold (9999-12-31T23:59:59Z): converting it would raise.
    (BackfillRequest(since=Timestamp(seconds=253_402_300_800)), ["backfill.since"]),
])
async def test_bad_backfill_requests_are_invalid_argument(service, backfill, fields):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "bad@example.com"
    credentials = sa_credentials(sim, address)
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            await client.register_mailbox(address, credentials=credentials, backfill=backfill)
        assert [v.field for v in caught.value.field_violations] == fields
        with pytest.raises(InvalidArgumentError) as batch:
            await client.register_mailboxes([address], backfill=backfill)
        assert [v.field for v in batch.value.field_violations] == fields
        assert not [m async for m in client.iter_mailboxes()], "nothing registered"
