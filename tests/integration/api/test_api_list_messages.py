"""ListMessages: a tenant pages its mailbox's messages.list through mailwatch's stored
credentials (the client library's twins, the simulator behind the real google-api-python-client)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2
from mailwatch_client import AsyncMailwatchClient, InvalidArgumentError, MailwatchClient, NotFoundError
from tests.fixtures.rpc import error_details, retry_delay_of, sa_request
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

ADDRESS = "big@example.com"


def _list_calls(sim, email: str) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.messages.list", 0)


async def test_pages_a_1000_message_mailbox(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    credentials = sa_credentials(sim, ADDRESS)
    label = sim.create_label(ADDRESS, "Invoices")
    items = []
    for n in range(1000):
        labels = ["INBOX", label] if n % 4 == 0 else ["INBOX"]
        if n % 50 == 7:
            labels = ["TRASH"]
        items.append({"emailAddress": ADDRESS, "labelIds": labels, "subject": f"m{n}"})
    inserted = sim.insert_messages(items)
    newest_first = [m["id"] for m in reversed(inserted)]
    labels_of = {m["id"]: sorted(item["labelIds"]) for m, item in zip(inserted, items)}
    trashed = {i for i, labels in labels_of.items() if "TRASH" in labels}
    labelled = [i for i in newest_first if label in labels_of[i]]

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(ADDRESS, credentials=credentials)
        before = _list_calls(sim, ADDRESS)

        everything = [m async for m in client.iter_messages(mailbox.id, include_spam_trash=True, page_size=100)]
        assert [m.id for m in everything] == newest_first
        assert all(m.thread_id and not m.label_ids for m in everything), "labels only when asked"
        assert _list_calls(sim, ADDRESS) - before == 10, "one messages.list per page of 100"

        # Gmail leaves SPAM and TRASH out unless asked.
        default = [m.id async for m in client.iter_messages(mailbox.id, page_size=500)]
        assert default == [i for i in newest_first if i not in trashed]

        by_label = [m.id async for m in client.iter_messages(mailbox.id, label_ids=[label])]
        assert by_label == labelled and len(by_label) == 250

        # Page sizes are Gmail's: at most 500, and 100 when each message costs a labels lookup.
        first = await client.list_messages(mailbox.id, page_size=1000, include_spam_trash=True)
        assert len(first.items) == 500 and first.next_page_token
        labelled_page = await client.list_messages(mailbox.id, page_size=500, include_labels=True,
                                                   include_spam_trash=True)
        assert [m.id for m in labelled_page.items] == newest_first[:100]
        assert {m.id: sorted(m.label_ids) for m in labelled_page.items} == {
            i: labels_of[i] for i in newest_first[:100]}
        assert first.items[0].id == newest_first[0]

        # The next page token belongs to its request: other parameters (or another mailbox) refuse it.
        with pytest.raises(InvalidArgumentError) as caught:
            await client.list_messages(mailbox.id, page_token=first.next_page_token, query="from:x",
                                       include_spam_trash=True)
        assert [v.field for v in caught.value.field_violations] == ["page_token"]
        second = await client.list_messages(mailbox.id, page_token=first.next_page_token, page_size=500,
                                            include_spam_trash=True)
        assert [m.id for m in second.items] == newest_first[500:] and not second.next_page_token


async def test_labels_of_a_message_deleted_before_the_lookup_leave_it_out(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    credentials = sa_credentials(sim, "gone@example.com")
    inserted = sim.insert_messages([{"emailAddress": "gone@example.com", "labelIds": ["INBOX"]} for _ in range(3)])

    def scenario():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            mailbox = client.register_mailbox("gone@example.com", credentials=credentials)
            listed = client.list_messages(mailbox.id)
            sim.delete_message("gone@example.com", inserted[1]["id"])
            sim.insert_message("gone@example.com", label_ids=["INBOX"])  # not on the stale page either way
            return listed, client.list_messages(mailbox.id, include_labels=True)

    listed, with_labels = await asyncio.to_thread(scenario)
    assert [m.id for m in listed.items] == [m["id"] for m in reversed(inserted)]
    assert inserted[1]["id"] not in [m.id for m in with_labels.items]
    assert all(list(m.label_ids) == ["INBOX"] for m in with_labels.items)


async def test_another_tenants_mailbox_is_not_found(service):
    _, alice = await service.new_tenant()
    _, bob = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "priv@example.com"), metadata=alice)
    service.sim.insert_message("priv@example.com", label_ids=["INBOX"], subject="secret")
    before = _list_calls(service.sim, "priv@example.com")
    answers = []
    for mailbox_id in (mailbox.id, "00000000-0000-0000-0000-000000000001"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.mailboxes.ListMessages(
                mailbox_service_pb2.ListMessagesRequest(mailbox_id=mailbox_id), metadata=bob)
        info, _ = error_details(caught.value)
        answers.append((caught.value.code(), info.reason, caught.value.details().replace(mailbox_id, "ID")))
    assert answers[0] == answers[1] and answers[0][0] == grpc.StatusCode.NOT_FOUND
    assert _list_calls(service.sim, "priv@example.com") == before, "no Gmail call for another tenant's mailbox"
    async with AsyncMailwatchClient(service.target, api_key_of(bob)) as client:
        with pytest.raises(NotFoundError):
            await client.list_messages(mailbox.id)


async def test_gmail_rate_limit_is_resource_exhausted_with_retry_info(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "busy@example.com"), metadata=auth)
    sim.inject_fault("userRateLimitExceeded", method="users.messages.list", user="busy@example.com",
                     retry_after=600)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.ListMessages(
            mailbox_service_pb2.ListMessagesRequest(mailbox_id=mailbox.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = error_details(caught.value)
    assert info.reason == "GMAIL_RATE_LIMITED"
    # Gmail names its retry time in the message; the caller gets it as RetryInfo.
    assert 500 < retry_delay_of(caught.value) <= 600


async def test_a_label_id_the_mailbox_does_not_have_is_invalid_argument_on_label_ids(service):
    """Gmail refuses it 400 "Invalid label: <id>": the caller is told which field, not handed an
    empty page."""
    sim = service.sim
    _, auth = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "labels@example.com"), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.ListMessages(mailbox_service_pb2.ListMessagesRequest(
            mailbox_id=mailbox.id, label_ids=["INBOX", "Label_404"]), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = error_details(caught.value)
    assert [v.field for v in bad_request.field_violations] == ["label_ids"]
    assert "Label_404" in bad_request.field_violations[0].description


async def test_a_query_lists_exactly_the_matching_messages(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = "search@example.com"
    credentials = sa_credentials(sim, address)
    now_ms = int(sim.now() * 1000)
    items = [
        {"subject": "Invoice 1", "from": "billing@shop.test", "labelIds": ["INBOX", "UNREAD"]},
        {"subject": "Lunch", "from": "bob@example.com", "labelIds": ["INBOX"]},
        {"subject": "Invoice 2", "from": "billing@shop.test", "labelIds": ["INBOX"],
         "internalDate": now_ms - 40 * 86_400_000},
        {"subject": "Invoice 3", "from": "billing@shop.test", "labelIds": ["TRASH"]},
    ]
    inserted = sim.insert_messages([{"emailAddress": address, **item} for item in items])
    ids = [m["id"] for m in inserted]

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials)

        async def listed(query, **kwargs):
            return {m.id async for m in client.iter_messages(mailbox.id, query=query, page_size=1, **kwargs)}

        assert await listed("from:billing@shop.test") == {ids[0], ids[2]}
        assert await listed("subject:invoice is:unread") == {ids[0]}
        assert await listed("invoice newer_than:30d") == {ids[0]}
        assert await listed("invoice -is:unread in:anywhere") == {ids[2], ids[3]}
        assert await listed("lunch OR in:trash") == {ids[1], ids[3]}

        # An operator the simulator cannot evaluate is refused, naming it, never ignored.
        with pytest.raises(InvalidArgumentError) as caught:
            await client.list_messages(mailbox.id, query="invoice filename:pdf")
        assert [v.field for v in caught.value.field_violations] == ["query"]
        assert "'filename:'" in caught.value.field_violations[0].description
