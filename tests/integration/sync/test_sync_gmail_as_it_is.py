"""The sync against Gmail as it really answers (issue 21): a batch's parts refused one by one,
labels in history as of when the page is served, a message the history lists before
messages.get finds it. Each test runs against the simulator's behaviour of real Gmail and
fails without the service's handling of it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mailwatch.config import GmailSettings
from mailwatch.gmail.client import HISTORY_PAGE_SIZE
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import claims_one, collect, eventually, message_events
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

ADDED = resources_pb2.EVENT_TYPE_MESSAGE_ADDED
CALLS_PER_USER = GmailSettings().calls_per_user  # the service's default: a batch's parts at most


def lookups(sim, email: str) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.messages.get", 0)


async def registered(service, email: str, **request_fields):
    """A tenant with `email` registered, past the watch's own notification, counters reset."""
    _, auth = await service.new_tenant()
    await service.mailboxes.RegisterMailbox(sa_request(service.sim, email, **request_fields), metadata=auth)
    service.sim.advance_clock(2)  # past Gmail's one-notification-per-second window of the watch
    service.sim.reset_counters()
    return auth


WITH_METADATA = dict(metadata=resources_pb2.MetadataOptions(enabled=True, headers=["Subject"]))


async def one_sync(service) -> None:
    await eventually(lambda: service.app.ingestor.stats.marked_due >= 1)
    await claims_one(service.app.sync_worker)


async def only_mailbox(service, auth):
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    [mailbox] = listed.mailboxes
    return mailbox


def added_with_metadata(events) -> dict[str, str]:
    return {e.message_id: dict((h.name, h.value) for h in e.metadata.headers)["Subject"]
            for e in events if e.type == ADDED and not e.metadata.missing}


async def test_parts_refused_for_too_many_concurrent_requests_are_sent_again_alone(make_service):
    """30 new messages while Gmail lets the user have only 3 requests in flight (another client
    holds the rest): the parts past it are refused 429 one by one and only they are sent again;
    one sync delivers all 30 with their metadata. (Retrying the whole batch stalls for ever.)"""
    email = "crowded@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, label_ids=["INBOX"], **WITH_METADATA)
        sim.configure(concurrent_requests_per_user=3)
        inserted = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"], "subject": f"m{n}"}
                                        for n in range(30)])
        await one_sync(service)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 30)
        assert added_with_metadata(events) == {m["id"]: f"m{n}" for n, m in enumerate(inserted)}
        counters = sim.counters()
        assert counters["peakConcurrentRequests"][email] <= 3
        # Refused parts were asked again, answered ones never: fewer than a second round of all 30.
        assert 30 < lookups(sim, email) < 60


async def test_a_failed_part_is_fetched_again_and_the_others_are_kept(make_service):
    email = "onepart@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, **WITH_METADATA)
        inserted = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"], "subject": f"m{n}"}
                                        for n in range(12)])
        sim.inject_fault("backendError", method="users.messages.get", user=email, count=1)
        await one_sync(service)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 12)
        assert added_with_metadata(events) == {m["id"]: f"m{n}" for n, m in enumerate(inserted)}
        assert lookups(sim, email) == 12 + 1  # the refused part once more, nothing else


async def test_a_sync_that_fails_does_not_fetch_again_what_it_already_had(make_service):
    """Gmail's per-user quota runs out halfway through the lookups: the sync backs off, and its
    next attempt asks only for the messages it did not get."""
    email = "again@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, **WITH_METADATA)
        sim.advance_clock(61)  # the registration's units out of Gmail's one-minute window
        inserted = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"], "subject": f"m{n}"}
                                        for n in range(12)])
        # history.list (2 units) and 7 messages.get (5 units each), then a lockout until the window allows.
        sim.configure(user_quota_units_per_minute=2 + 7 * 5)
        await one_sync(service)
        first_attempt = lookups(sim, email)
        assert first_attempt < 12  # it stopped asking once Gmail said to wait longer than a lookup waits
        mailbox = await only_mailbox(service, auth)
        assert mailbox.last_error.reason == "GMAIL_RATE_LIMITED" and mailbox.history_id < inserted[0]["historyId"]

        sim.configure(user_quota_units_per_minute=None)
        sim.clear_faults()
        async with service.app.sessions() as session, session.begin():
            await session.execute(text(
                "UPDATE mailboxes SET sync_due_at = now(), backoff_until = NULL, gmail_retry_at = NULL"))
        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 12)
        assert added_with_metadata(events) == {m["id"]: f"m{n}" for n, m in enumerate(inserted)}
        # Only the messages it did not have: 7 were answered before the quota ran out.
        assert lookups(sim, email) == first_attempt + 12 - 7


async def test_labels_in_history_are_the_labels_when_the_page_is_served(make_service):
    """Gmail gives a history message the labels it has when the page is served. A message added
    to INBOX and archived before the sync is shown without INBOX in its messagesAdded: the add
    is still delivered (its labels then rebuilt), with the archive; a message added elsewhere and
    moved to INBOX later shows as entering the set, not as added to it. No messages.get."""
    email = "served@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, label_ids=["INBOX"])
        archived = sim.insert_message(email, label_ids=["INBOX", "UNREAD"])
        sim.modify_labels(email, archived["id"], remove=["INBOX"])
        moved_in = sim.insert_message(email, label_ids=["CATEGORY_PROMOTIONS"])
        sim.modify_labels(email, moved_in["id"], add=["INBOX"])
        marker = sim.insert_message(email, label_ids=["INBOX"])
        await one_sync(service)
        events = await collect(service, auth, lambda ev: marker["id"] in [e.message_id for e in ev])
        assert [(kind, message, tuple(sorted(labels))) for kind, message, labels in message_events(events)] == [
            ("EVENT_TYPE_MESSAGE_ADDED", archived["id"], ("INBOX", "UNREAD")),
            ("EVENT_TYPE_LABELS_REMOVED", archived["id"], ("INBOX",)),
            ("EVENT_TYPE_LABELS_ADDED", moved_in["id"], ("INBOX",)),
            ("EVENT_TYPE_MESSAGE_ADDED", marker["id"], ("INBOX",)),
        ]
        assert lookups(sim, email) == 0


async def test_a_message_listed_before_messages_get_finds_it_is_asked_again(make_service):
    """Gmail's history (and notification) can outrun messages.get: for a moment it answers 404
    for a message the history lists. The metadata is asked again, not reported missing."""
    email = "early@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, **WITH_METADATA)
        sim.configure(message_visibility_delay_seconds=1.5)
        message = sim.insert_message(email, label_ids=["INBOX"], subject="Soon")
        await one_sync(service)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 1)
        assert added_with_metadata(events) == {message["id"]: "Soon"}
        assert lookups(sim, email) >= 2


async def test_a_message_deleted_in_the_listed_history_is_not_waited_for(make_service):
    email = "brief@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email, **WITH_METADATA)
        brief = sim.insert_message(email, label_ids=["INBOX"], subject="Gone")
        sim.delete_message(email, brief["id"])
        await one_sync(service)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 2)
        [added] = [e for e in events if e.type == ADDED]
        assert added.metadata.missing
        assert lookups(sim, email) == 0  # its deletion is in the history: nothing to ask


async def autosaved_three_times_then_sent(sim, email: str) -> list[dict]:
    """A draft saved three times then sent, then a message to INBOX (it makes the watch
    notify): [v1, v2, v3, sent, inbox] as the simulator answered them."""
    first = sim.save_draft(email, subject="v1")
    versions = [first, *(sim.save_draft(email, draft_id=first["draftId"], subject=f"v{n}") for n in (2, 3))]
    sent = sim.send_draft(email, first["draftId"])
    assert "SENT" in sent["labelIds"] and "DRAFT" not in sent["labelIds"]
    return [*versions, sent, sim.insert_message(email, label_ids=["INBOX"])]


async def test_what_a_consumer_sees_of_drafts_and_sent_mail_in_both_modes(make_service):
    """docs/api.md: each autosave is a new message with DRAFT and the previous version's deletion;
    sending adds a message with SENT and deletes the draft. Two tenants watch the same mailbox
    (one shared Gmail watch), one with the default, one with include_drafts. The versions are
    all gone when the sync reads the history (their labels unknown): the default consumer sees
    only the sent message added, and no deletion; the other sees each version added (without
    labels) and each replaced version deleted."""
    email = "writer@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        mail_only = await registered(service, email)
        _, everything = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, email, include_drafts=True),
                                                          metadata=everything)
        assert mailbox.include_drafts
        sim.advance_clock(2)
        v1, v2, v3, sent, inbox = await autosaved_three_times_then_sent(sim, email)
        await sync_through(service, email, inbox["historyId"])
        done = lambda ev: inbox["id"] in [e.message_id for e in ev]  # noqa: E731
        assert message_events(await collect(service, mail_only, done)) == [
            ("EVENT_TYPE_MESSAGE_ADDED", sent["id"], ("SENT",)),
            ("EVENT_TYPE_MESSAGE_ADDED", inbox["id"], ("INBOX",)),
        ]
        assert message_events(await collect(service, everything, done)) == [
            ("EVENT_TYPE_MESSAGE_ADDED", v1["id"], ()),
            ("EVENT_TYPE_MESSAGE_ADDED", v2["id"], ()),
            ("EVENT_TYPE_MESSAGE_DELETED", v1["id"], ()),
            ("EVENT_TYPE_MESSAGE_ADDED", v3["id"], ()),
            ("EVENT_TYPE_MESSAGE_DELETED", v2["id"], ()),
            ("EVENT_TYPE_MESSAGE_ADDED", sent["id"], ("SENT",)),
            ("EVENT_TYPE_MESSAGE_DELETED", v3["id"], ()),
            ("EVENT_TYPE_MESSAGE_ADDED", inbox["id"], ("INBOX",)),
        ]


async def test_drafts_synced_version_by_version_are_left_out_by_default(make_service):
    """Each version is still there when its sync reads the history (DRAFT known); its deletion
    comes in the next sync, with the next version's addition: neither reaches the consumer, the
    sent message does. A label filter applies to what is left (SENT is outside INBOX)."""
    email = "slowwriter@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email)
        _, inbox_only = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, email, label_ids=["INBOX"]), metadata=inbox_only)
        draft = None
        for version in range(3):
            sim.advance_clock(2)  # past Gmail's one-notification-per-second window
            saved = sim.save_draft(email, draft_id=draft, subject=f"v{version}")
            draft = saved["draftId"]
            await sync_through(service, email, saved["historyId"])
        sim.advance_clock(2)
        sent = sim.send_draft(email, draft)
        inbox = sim.insert_message(email, label_ids=["INBOX"])
        await sync_through(service, email, inbox["historyId"])
        done = lambda ev: inbox["id"] in [e.message_id for e in ev]  # noqa: E731
        assert message_events(await collect(service, auth, done)) == [
            ("EVENT_TYPE_MESSAGE_ADDED", sent["id"], ("SENT",)),
            ("EVENT_TYPE_MESSAGE_ADDED", inbox["id"], ("INBOX",)),
        ]
        assert message_events(await collect(service, inbox_only, done)) == [
            ("EVENT_TYPE_MESSAGE_ADDED", inbox["id"], ("INBOX",)),
        ]


async def test_a_replacement_split_across_two_history_pages_still_leaves_the_version_out(make_service):
    """history.list pages hold 500 records: the next version's addition ends the first page and the
    replaced version's deletion starts the second. The deletion is still known for a draft's."""
    email = "pages@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth = await registered(service, email)
        mail = sim.insert_messages([{"emailAddress": email, "labelIds": ["INBOX"]} for _ in range(HISTORY_PAGE_SIZE - 2)])
        first = sim.save_draft(email, subject="v1")  # record 499
        sim.save_draft(email, draft_id=first["draftId"], subject="v2")  # 500: v2 added; 501: v1 deleted
        marker = sim.insert_message(email, label_ids=["INBOX"])
        await sync_through(service, email, marker["historyId"])
        events = message_events(await collect(service, auth, lambda ev: marker["id"] in [e.message_id for e in ev]))
        assert events == [("EVENT_TYPE_MESSAGE_ADDED", m["id"], ("INBOX",)) for m in [*mail, marker]]


async def test_drafts_listed_before_messages_get_finds_them_are_asked_again(make_service):
    """A draft version and a sent draft's message are new messages: Gmail's history can list them
    before messages.get finds them too. Their metadata is asked again, not reported missing; a
    version the history already deletes is not waited for."""
    email = "hasty@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        mail_only = await registered(service, email, **WITH_METADATA)
        _, everything = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, email, include_drafts=True, **WITH_METADATA),
                                                metadata=everything)
        sim.advance_clock(2)
        sim.configure(message_visibility_delay_seconds=1.5)
        kept = sim.save_draft(email, subject="Kept")
        replaced = sim.save_draft(email, subject="Sent")
        sent = sim.send_draft(email, replaced["draftId"])
        await sync_through(service, email, sent["historyId"])
        done = lambda ev: sent["id"] in [e.message_id for e in ev if e.type == ADDED]  # noqa: E731
        assert added_with_metadata(await collect(service, mail_only, done)) == {sent["id"]: "Sent"}
        events = await collect(service, everything, lambda ev: len(message_events(ev)) >= 4)
        assert added_with_metadata(events) == {kept["id"]: "Kept", sent["id"]: "Sent"}
        assert [e.metadata.missing for e in events if e.type == ADDED and e.message_id == replaced["id"]] == [True]
        assert lookups(sim, email) > 3  # one lookup each (S twice: one per registration), and again after 404s


async def sync_through(service, email: str, history_id: str) -> None:
    """Run the sync worker until every registration of `email` has synced up to `history_id`
    (the ingest of Gmail's notification marks them due)."""
    async def synced() -> bool:
        await service.app.sync_worker.run_once()
        async with service.app.sessions() as session:
            behind = (await session.execute(text(
                "SELECT count(*) FROM mailboxes WHERE email_address = :e AND history_id < :h"),
                {"e": email, "h": int(history_id)})).scalar_one()
        return behind == 0

    await eventually(synced, what=f"{email} synced through {history_id}")
