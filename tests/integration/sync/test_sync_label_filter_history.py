"""Label filters against history as Gmail documents it (messages carry only id and threadId):
decided from the labels each entry changes, else from messages.get(format=minimal) through
the batch endpoint, never by dropping the message."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mailwatch.config import GmailSettings
from mailwatch.gmail.client import PART_ATTEMPTS
from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.pipeline import (
    claims_one, collect, eventually, gmail_notification, message_events, publish_raw,
)
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

CALLS_PER_USER = GmailSettings().calls_per_user  # the service's default: parts in flight per user


def gmail_calls(sim, email: str, method: str) -> int:
    return sim.counters()["calls"].get(email, {}).get(method, 0)


@pytest.fixture
def inbox_only(make_service):
    """`async with inbox_only(email) as (service, auth):` a service that syncs only when told
    (`run_once`), with `email` registered under an INCLUDE INBOX filter, past the watch's own
    notification window, counters reset; history messages carry their labels (as served)
    only with `history_label_ids=True`."""

    @contextlib.asynccontextmanager
    async def start(email, *, history_label_ids=False):
        async with make_service(sync_enabled=False, poll_enabled=False) as service:
            # Messages in history without labels, as the discovery document allows, unless asked.
            service.sim.configure(history_label_ids=history_label_ids)
            _, auth = await service.new_tenant()
            await service.mailboxes.RegisterMailbox(sa_request(service.sim, email, label_ids=["INBOX"]),
                                                    metadata=auth)
            service.sim.advance_clock(2)
            service.sim.reset_counters()
            yield service, auth

    return start


async def sync_everything_once(service, email):
    """One notification makes the mailbox due; one sync takes all the history in one page."""
    await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
    await claims_one(service.app.sync_worker)


async def test_include_filter_keeps_every_event_of_the_watched_set(inbox_only):
    email = "filtered@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        kept = sim.insert_message(email, label_ids=["INBOX", "UNREAD"])
        spam = sim.insert_message(email, label_ids=["SPAM"])
        leaving = sim.insert_message(email, label_ids=["INBOX"])
        sim.modify_labels(email, leaving["id"], remove=["INBOX"])  # left the set before the sync asked
        starred_spam = sim.insert_message(email, label_ids=["SPAM"])
        sim.modify_labels(email, starred_spam["id"], add=["STARRED"])  # never in the set
        entering = sim.insert_message(email, label_ids=["SPAM"])
        sim.modify_labels(email, entering["id"], add=["INBOX"])  # entered the set
        await sync_everything_once(service, email)

        events = await collect(service, auth, lambda ev: entering["id"] in [e.message_id for e in ev])
        assert message_events(events) == [
            ("EVENT_TYPE_MESSAGE_ADDED", kept["id"], ("INBOX", "UNREAD")),
            ("EVENT_TYPE_MESSAGE_ADDED", leaving["id"], ("INBOX",)),
            ("EVENT_TYPE_LABELS_REMOVED", leaving["id"], ("INBOX",)),
            ("EVENT_TYPE_LABELS_ADDED", entering["id"], ("INBOX",)),
        ]
        assert spam["id"] not in [e.message_id for e in events]
        # The five added messages were looked up once each, in one batch request.
        assert gmail_calls(sim, email, "users.messages.get") == 5
        assert sim.counters()["batches"]["sizes"] == [5]


async def test_a_lone_lookup_is_one_plain_messages_get_not_a_batch(inbox_only):
    email = "lone@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        kept = sim.insert_message(email, label_ids=["INBOX"])
        await sync_everything_once(service, email)
        events = await collect(service, auth, lambda ev: kept["id"] in [e.message_id for e in ev])
        assert message_events(events) == [("EVENT_TYPE_MESSAGE_ADDED", kept["id"], ("INBOX",))]
        # The same Gmail call and units as a batch of one part, without the batch's MIME round trip.
        assert gmail_calls(sim, email, "users.messages.get") == 1
        assert sim.counters()["batches"]["sizes"] == []


async def test_lookups_go_in_batches_no_larger_than_the_calls_allowed_per_user(inbox_only):
    email = "many@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        inserted = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"] if i % 2 else ["SPAM"]}
                                        for i in range(120)])
        await sync_everything_once(service, email)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 60)
        assert [m for _, m, _ in message_events(events)] == [m["id"] for i, m in enumerate(inserted) if i % 2]
        assert gmail_calls(sim, email, "users.messages.get") == 120
        # Each part is a request in flight for the user: a batch holds one slot per part.
        assert sim.counters()["batches"]["sizes"] == [CALLS_PER_USER] * (120 // CALLS_PER_USER)


async def test_a_message_gone_before_the_lookup_is_reported_not_dropped(inbox_only):
    email = "gone@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        brief = sim.insert_message(email, label_ids=["INBOX"])
        sim.delete_message(email, brief["id"])
        await sync_everything_once(service, email)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 2)
        assert message_events(events) == [("EVENT_TYPE_MESSAGE_ADDED", brief["id"], ()),
                                          ("EVENT_TYPE_MESSAGE_DELETED", brief["id"], ())]


async def test_a_refused_lookup_retries_the_page_instead_of_guessing(inbox_only):
    email = "limited@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        kept = sim.insert_message(email, label_ids=["INBOX"])
        # Refused every time the sync asks (it asks again a few times, briefly, before giving up).
        sim.inject_fault("500", method="users.messages.get", count=PART_ATTEMPTS)
        await sync_everything_once(service, email)  # the lookup fails: nothing is committed
        assert await service.app.sync_worker.run_once() == 0  # backing off
        listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
        assert "messages.get" in listed.mailboxes[0].last_error.message
        assert kept["historyId"] > listed.mailboxes[0].history_id


async def test_a_change_between_listing_and_lookup_is_traced_back_not_reported(inbox_only):
    email = "racing@example.com"
    async with inbox_only(email) as (service, auth):
        sim = service.sim
        junk = sim.insert_message(email, label_ids=["SPAM"])  # outside the watch's filter: Gmail stays quiet
        publish_raw(service.topic, [gmail_notification(email, sim.history_id(email))])  # as a fallback poll would
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        sim.add_latency("users.messages.get", 1.0, user=email)  # the lookup waits inside Gmail...
        syncing = asyncio.create_task(service.app.sync_worker.run_once())
        await eventually(lambda: gmail_calls(sim, email, "users.messages.get") >= 1)
        sim.modify_labels(email, junk["id"], add=["STARRED"])  # ...while the message changes again
        sim.clear_latency()
        assert await syncing == 1
        marker = sim.insert_message(email, label_ids=["INBOX"])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 2)
        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: marker["id"] in [e.message_id for e in ev])
        # The junk never was in the watched set: the later change was listed and undone, not guessed.
        assert message_events(events) == [("EVENT_TYPE_MESSAGE_ADDED", marker["id"], ("INBOX",))]
        assert gmail_calls(sim, email, "users.history.list") == 3  # the page was listed again once
