"""Every RPC through the client library (sync and asyncio) against a real in-process mailwatch.

The in-process server runs on the test's event loop, so the blocking client is
driven from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mailwatch_client import (
    AsyncMailwatchClient,
    EventType,
    MailboxState,
    MailwatchClient,
    OAuthCredentials,
    Page,
)
from tests.fixtures.names import TEST_PROJECT
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

ACTIVE = MailboxState.Value("MAILBOX_STATE_ACTIVE")
STOPPED = MailboxState.Value("MAILBOX_STATE_STOPPED")


async def test_mailbox_rpcs_async(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        first = await client.register_mailbox(
            "ann@example.com", credentials=sa_credentials(sim, "ann@example.com"), label_ids=["INBOX"]
        )
        assert first.state == ACTIVE and list(first.label_filter.label_ids) == ["INBOX"]
        again = await client.register_mailbox("ann@example.com", credentials=sa_credentials(sim, "ann@example.com"))
        assert again.id == first.id  # idempotent per address

        client_id = sim.create_oauth_client(project_id=TEST_PROJECT)
        sim.create_mailbox("bob@example.com")
        oauth = OAuthCredentials(
            client_id=client_id["clientId"], client_secret=client_id["clientSecret"],
            refresh_token=sim.issue_refresh_token(client_id["clientId"], "bob@example.com"),
        )
        bob = await client.register_mailbox("bob@example.com", credentials=oauth)
        cid = await client.register_mailbox("cid@example.com", credentials=sa_credentials(sim, "cid@example.com"))

        assert (await client.get_mailbox(bob.id)).email_address == "bob@example.com"

        page = await client.list_mailboxes(page_size=2)
        assert isinstance(page, Page) and len(page) == 2 and page.next_page_token
        everything = [m.id async for m in client.iter_mailboxes(page_size=1)]
        assert everything == [first.id, bob.id, cid.id]

        stopped = await client.stop_mailbox(cid.id)
        assert stopped.state == STOPPED
        assert (await client.stop_mailbox(cid.id)).state == STOPPED  # idempotent
        assert [m.id async for m in client.iter_mailboxes(states=["STOPPED"])] == [cid.id]
        assert [m.id async for m in client.iter_mailboxes(states=[ACTIVE])] == [first.id, bob.id]

        async with client.stream_changes(start="earliest", event_types=["MAILBOX_STOPPED"]) as stream:
            event = await asyncio.wait_for(anext(stream), 20)
        assert event.type == EventType.Value("EVENT_TYPE_MAILBOX_STOPPED") and event.mailbox_id == cid.id


async def test_mailbox_rpcs_sync(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    credentials = {email: sa_credentials(sim, email) for email in ("dan@example.com", "eve@example.com")}

    def scenario():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            dan = client.register_mailbox("dan@example.com", credentials=credentials["dan@example.com"])
            eve = client.register_mailbox("eve@example.com", credentials=credentials["eve@example.com"])
            assert client.get_mailbox(dan.id).id == dan.id
            page = client.list_mailboxes(page_size=1)
            assert [m.id for m in page] == [dan.id]
            assert [m.id for m in client.iter_mailboxes(page_size=1)] == [dan.id, eve.id]
            assert client.stop_mailbox(eve.id).state == STOPPED
            with client.stream_changes(start="earliest", mailbox_ids=[eve.id]) as stream:
                kinds = [EventType.Name(next(stream).type) for _ in range(2)]
            assert kinds == ["EVENT_TYPE_WATCH_STARTED", "EVENT_TYPE_MAILBOX_STOPPED"]

    await asyncio.to_thread(scenario)


async def test_register_mailboxes_answers_each_address(service):
    _, auth = await service.new_tenant()
    credentials = sa_credentials(service.sim, "fay@example.com")
    service.sim.create_mailbox("gus@example.com")
    addresses = ["fay@example.com", "not an address", "gus@example.com"]

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        results = await client.register_mailboxes(addresses, service_account=credentials, label_ids=["INBOX"])
    assert [r.email_address for r in results] == addresses
    assert [r.status.code for r in results] == [0, 3, 0]  # OK, INVALID_ARGUMENT, OK
    assert list(results[2].mailbox.label_filter.label_ids) == ["INBOX"]

    def again():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            return client.register_mailboxes(addresses[::2], service_account=credentials, label_ids=["INBOX"])

    repeated = await asyncio.to_thread(again)  # the sync twin; idempotent per address
    assert [r.mailbox.id for r in repeated] == [results[0].mailbox.id, results[2].mailbox.id]


async def test_admin_rpcs_async(service, operator_token):
    name = f"acme-{uuid.uuid4().hex[:6]}"
    async with AsyncMailwatchClient(service.target, operator_token=operator_token) as admin:
        tenant = await admin.create_tenant(name)
        assert tenant.name == name and tenant.id
        names = [t.name async for t in admin.iter_tenants(page_size=1)]
        assert name in names
        created = await admin.create_api_key(tenant_name=name)
        assert created.key and created.api_key.tenant_id == tenant.id
        second = await admin.create_api_key(tenant_id=tenant.id)
        keys = await admin.list_api_keys(tenant_id=tenant.id)
        assert [k.id for k in keys] == [created.api_key.id, second.api_key.id]
        assert [k.id async for k in admin.iter_api_keys(tenant_name=name, page_size=1)] == [k.id for k in keys]
        revoked = await admin.revoke_api_key(second.api_key.id)
        assert revoked.HasField("revoke_time")
        assert (await admin.revoke_api_key(second.api_key.id)).revoke_time == revoked.revoke_time  # idempotent

    # The issued key works as a tenant credential.
    async with AsyncMailwatchClient(service.target, created.key) as tenant_client:
        assert len(await tenant_client.list_mailboxes()) == 0


async def test_admin_rpcs_sync(service, operator_token):
    name = f"sync-{uuid.uuid4().hex[:6]}"

    def scenario():
        with MailwatchClient(service.target, operator_token=operator_token) as admin:
            tenant = admin.create_tenant(name)
            assert any(t.id == tenant.id for t in admin.iter_tenants())
            page = admin.list_tenants(page_size=1)
            assert len(page) == 1
            created = admin.create_api_key(tenant_id=tenant.id)
            assert [k.id for k in admin.iter_api_keys(tenant_id=tenant.id)] == [created.api_key.id]
            assert admin.list_api_keys(tenant_name=name).items[0].prefix == created.api_key.prefix
            assert admin.revoke_api_key(created.api_key.id).HasField("revoke_time")

    await asyncio.to_thread(scenario)


def test_tenant_selector_needs_exactly_one():
    client = MailwatchClient("127.0.0.1:1")
    try:
        with pytest.raises(ValueError):
            client.create_api_key()
        with pytest.raises(ValueError):
            client.list_api_keys(tenant_id="a", tenant_name="b")
    finally:
        client.close()
