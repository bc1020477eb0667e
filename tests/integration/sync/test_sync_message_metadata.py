"""MESSAGE_ADDED metadata, opt-in per registration, against the Gmail simulator.

Metadata is fetched with messages.get(format=metadata) through Gmail's batch
endpoint before the page's events commit; the simulator counts every batch
request and every call inside it, so the Gmail cost is asserted exactly.
"""

from __future__ import annotations

import pytest

from sqlalchemy import text

from mailwatch.config import GmailSettings
from mailwatch.gmail.client import PART_ATTEMPTS
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import claims_one, collect, eventually, get_mailbox, message_events, register_sa_mailbox
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

CALLS_PER_USER = GmailSettings().calls_per_user  # the service's default: parts in flight per user

ADDED = resources_pb2.EVENT_TYPE_MESSAGE_ADDED


def headers_of(event) -> dict[str, str]:
    return {header.name: header.value for header in event.metadata.headers}


async def test_opted_in_mailbox_gets_metadata_in_batches_and_others_none(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        opted = await service.mailboxes.RegisterMailbox(
            sa_request(sim, "meta@example.com", metadata=resources_pb2.MetadataOptions(enabled=True)), metadata=auth
        )
        assert opted.metadata.enabled and list(opted.metadata.headers) == [
            "From", "To", "Cc", "Subject", "Date", "Message-ID"]
        plain = await service.mailboxes.RegisterMailbox(sa_request(sim, "plain@example.com"), metadata=auth)
        assert not plain.HasField("metadata")
        sim.advance_clock(2)  # past Gmail's one-notification-per-second window of the watches

        inserted = sim.insert_messages([
            {"emailAddress": "meta@example.com", "labelIds": ["INBOX"], "subject": f"Report {n}",
             "from": "Boss <boss@example.com>", "to": "meta@example.com", "body": f"body {n}"}
            for n in range(60)
        ])
        sim.insert_message("plain@example.com", label_ids=["INBOX"], subject="No metadata wanted")
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 2)
        sim.reset_counters()
        assert await service.app.sync_worker.run_once() == 2

        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 61)
        added = {e.message_id: e for e in events if e.type == ADDED}
        for n, message in enumerate(inserted):
            event = added[message["id"]]
            assert event.HasField("metadata") and not event.metadata.missing
            assert headers_of(event)["Subject"] == f"Report {n}"
            assert headers_of(event)["From"] == "Boss <boss@example.com>"
            assert event.metadata.size_estimate > 0 and event.metadata.snippet.startswith("body")
            assert event.metadata.HasField("internal_time")
        [plain_event] = [e for e in added.values() if e.email_address == "plain@example.com"]
        assert not plain_event.HasField("metadata")

        counters = sim.counters()
        # Each opted-in message is looked up once for its metadata, in batches no larger than the
        # calls the service lets itself have in flight for one user (each part is one); the other
        # mailbox's labels come with the history: no lookup.
        assert sorted(counters["batches"]["sizes"]) == [CALLS_PER_USER] * 12
        assert counters["calls"]["meta@example.com"]["users.messages.get"] == 60
        assert counters["calls"]["plain@example.com"].get("users.messages.get", 0) == 0
        # Gmail's units: history.list 2 + 60 x messages.get 5.
        assert counters["quotaUnits"]["meta@example.com"] == 2 + 60 * 5


async def test_turning_metadata_on_by_registering_again_keeps_the_watch_and_the_position(make_service):
    """Only the options change: no second users.watch (100 units) and no new start, so a
    message that arrived before the re-registration and was not synced yet still comes, now
    with the metadata asked for."""
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        request = sa_request(sim, "later@example.com")
        first = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        sim.advance_clock(2)
        message = sim.insert_message("later@example.com", label_ids=["INBOX"], subject="Before the change")

        request.metadata.CopyFrom(resources_pb2.MetadataOptions(enabled=True, headers=["Subject"]))
        again = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert (again.id, again.metadata.enabled, list(again.metadata.headers)) == (first.id, True, ["Subject"])
        assert again.history_id == first.history_id < sim.history_id("later@example.com")
        assert sim.counters()["calls"]["later@example.com"]["users.watch"] == 1

        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: any(e.type == ADDED for e in ev))
        [added] = [e for e in events if e.type == ADDED]
        assert added.message_id == message["id"] and headers_of(added) == {"Subject": "Before the change"}
        started = [e for e in events if e.type == resources_pb2.EVENT_TYPE_WATCH_STARTED]
        assert len(started) == 1


async def test_a_message_deleted_before_the_fetch_still_has_its_event_marked_missing(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(
            sa_request(sim, "gone@example.com",
                       metadata=resources_pb2.MetadataOptions(enabled=True, headers=["Subject", "X-Ticket"])),
            metadata=auth,
        )
        sim.advance_clock(2)
        kept = sim.insert_message("gone@example.com", label_ids=["INBOX"], subject="Kept",
                                  headers=[("X-Ticket", "T-42")])
        doomed = sim.insert_message("gone@example.com", label_ids=["INBOX"], subject="Doomed")
        sim.delete_message("gone@example.com", doomed["id"])
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        await claims_one(service.app.sync_worker)

        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 3)
        added = {e.message_id: e for e in events if e.type == ADDED}
        assert added[doomed["id"]].metadata.missing
        assert list(added[doomed["id"]].metadata.headers) == []
        assert headers_of(added[kept["id"]]) == {"Subject": "Kept", "X-Ticket": "T-42"}
        assert [e.message_id for e in events if e.type == resources_pb2.EVENT_TYPE_MESSAGE_DELETED] == [doomed["id"]]


async def test_a_failed_fetch_commits_nothing_and_the_retry_delivers_each_event_once(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(
            sa_request(sim, "flaky@example.com", metadata=resources_pb2.MetadataOptions(enabled=True)),
            metadata=auth,
        )
        sim.advance_clock(2)
        message = sim.insert_message("flaky@example.com", label_ids=["INBOX"], subject="Retry me")
        await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
        # Refused every time the sync asks (it asks again a few times, briefly, before giving up).
        sim.inject_fault("backendError", method="users.messages.get", user="flaky@example.com", count=PART_ATTEMPTS)
        await claims_one(service.app.sync_worker)

        # Nothing was committed: the mailbox still stands at its registration history id.
        after_failure = await service.mailboxes.GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
        )
        assert after_failure.history_id == mailbox.history_id
        assert after_failure.last_error.reason == "GMAIL_UNAVAILABLE"

        # The failure set a backoff: make the mailbox due now rather than wait it out.
        async with service.app.sessions() as session, session.begin():
            await session.execute(text("UPDATE mailboxes SET sync_due_at = now(), backoff_until = NULL"))
        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 1)
        added = [e for e in events if e.type == ADDED]
        assert [e.message_id for e in added] == [message["id"]]
        assert headers_of(added[0])["Subject"] == "Retry me"


async def test_a_header_with_a_nul_arrives_with_u_fffd_in_its_place(make_service):
    # Real mail can carry a NUL in a header; Postgres' jsonb cannot hold U+0000. Once this made
    # every commit of the page fail, and poison handling then skipped the message.
    email = "nul@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await register_sa_mailbox(
            service, email, metadata=resources_pb2.MetadataOptions(enabled=True, headers=["Subject"]))
        sim.advance_clock(2)  # past Gmail's one-notification-per-second window of the watch
        message = sim.insert_message(email, label_ids=["INBOX"], subject="Invoice\x00attached")
        async with service.app.sessions() as session, session.begin():
            await session.execute(text("UPDATE mailboxes SET sync_due_at = now()"))
        await claims_one(service.app.sync_worker)

        current = await get_mailbox(service, auth, mailbox.id)
        assert current.history_id >= message["historyId"] and not current.HasField("last_error")
        events = await collect(service, auth, lambda ev: any(e.type == ADDED for e in ev))
        [added] = [e for e in events if e.type == ADDED]
        assert added.message_id == message["id"] and headers_of(added) == {"Subject": "Invoice\ufffdattached"}
        assert not [e for e in events if e.type == resources_pb2.EVENT_TYPE_HISTORY_SKIPPED]
