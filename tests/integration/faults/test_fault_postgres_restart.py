"""A real Postgres restart (`pg_ctl`) under a running mailwatch.

Database unavailability is UNAVAILABLE with a retry hint on every RPC (never
INTERNAL); the service recovers by itself when Postgres is back (sync worker,
ingest, the LISTEN connection); and a consumer using the client library's
`stream_changes` resumes without a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailwatch_client import AsyncMailwatchClient, EventType, RetryConfig
from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.rpc import retry_delay_of
from tests.fixtures.service import OPERATOR_TOKEN, run_service, service_settings
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

MESSAGE_ADDED = EventType.Value("EVENT_TYPE_MESSAGE_ADDED")
FAST_RECONNECT = RetryConfig(initial_backoff=0.1, max_backoff=0.5, max_attempts=0)


@contextlib.asynccontextmanager
async def service_on(private_postgres, gmail_sim, pubsub_topic, **overrides):
    _, url = private_postgres
    settings = service_settings(
        url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"], **overrides
    )
    async with run_service(settings, gmail_sim, pubsub_topic["topic"], pubsub_topic["subscription"]) as service:
        yield service


def added(events) -> list[str]:
    return [e.message_id for e in events if e.type == MESSAGE_ADDED]


async def test_streams_and_workers_ride_out_a_postgres_restart(private_postgres, gmail_sim, pubsub_topic):
    server, _ = private_postgres
    # A short lease: a sync cut by the restart is taken up again soon after.
    async with service_on(private_postgres, gmail_sim, pubsub_topic, sync_lease_seconds=3) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        addresses = ["pg-a@example.com", "pg-b@example.com"]
        async with AsyncMailwatchClient(service.target, api_key_of(auth), stream_retry=FAST_RECONNECT) as client:
            for address in addresses:
                await client.register_mailbox(address, credentials=sa_credentials(sim, address))
            inserted = [sim.insert_message(a, label_ids=["INBOX"])["id"] for a in addresses for _ in range(3)]

            events: list = []
            stream = client.stream_changes(start="earliest", heartbeat_interval=1)

            async def consume():
                async for event in stream:
                    events.append(event)

            consumer = asyncio.create_task(consume())
            try:
                await eventually(lambda: sorted(added(events)) == sorted(inserted), timeout=60,
                                 what="events before the restart")

                # Changes keep happening in Gmail while the database is down and while it starts.
                def changes_in_gmail() -> None:
                    inserted.extend(sim.insert_message(a, label_ids=["INBOX"])["id"] for a in addresses)

                # Down until the stream has been cut by it: a caught-up stream reads only when woken
                # (the LISTEN connection's loss wakes it, then the fallback poll), so on a loaded
                # host its first read may come after a quick `pg_ctl restart` is over and find the
                # database back, an outage ridden out without a cut that leaves the resume untested.
                reconnects = stream.reconnects
                stopping = asyncio.create_task(asyncio.to_thread(server.stop_server))
                try:
                    async def cut_while_down() -> bool:
                        changes_in_gmail()
                        return stopping.done() and stream.reconnects > reconnects

                    # 0.2 s: the pace of changes in Gmail while the database is down.
                    await eventually(cut_while_down, timeout=60, interval=0.2, what="the stream cut by the outage")
                finally:
                    await stopping
                    starting = asyncio.create_task(asyncio.to_thread(server.start_server))
                    while not starting.done():
                        changes_in_gmail()
                        await asyncio.sleep(0.2)  # the pace of changes in Gmail while the database starts
                    await starting
                inserted += [sim.insert_message(a, label_ids=["INBOX"])["id"] for a in addresses for _ in range(2)]

                await eventually(lambda: len(added(events)) >= len(inserted), timeout=60,
                                 what="every change after the restart")
                await eventually(lambda: service.app.notifier.connected, timeout=60, what="LISTEN reconnected")
                # One more change after everything settled: the whole pipeline is live again.
                last = sim.insert_message(addresses[0], label_ids=["INBOX"])["id"]
                inserted.append(last)
                await eventually(lambda: last in added(events), timeout=60, what="a change made after recovery")
                assert not consumer.done(), consumer  # the consumer never gave up
            finally:
                await stream.aclose()
                await asyncio.wait_for(consumer, 10)

    assert sorted(added(events)) == sorted(inserted)  # no gap, no duplicate
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))


def reason_of(error: grpc.aio.AioRpcError) -> str | None:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


async def test_every_rpc_is_unavailable_with_a_retry_hint_while_postgres_is_down(
    private_postgres, gmail_sim, pubsub_topic
):
    server, _ = private_postgres
    async with service_on(private_postgres, gmail_sim, pubsub_topic) as service:
        tenant_id, auth = await service.new_tenant()
        sim = service.sim
        key = sim.create_service_account_key(project_id=TEST_PROJECT)
        sim.create_mailbox("down@example.com")
        registered = await service.mailboxes.RegisterMailbox(
            mailbox_service_pb2.RegisterMailboxRequest(
                email_address="down@example.com",
                service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
            ),
            metadata=auth,
        )
        operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
        sim.create_mailbox("later@example.com")
        calls = {
            "RegisterMailbox": lambda: service.mailboxes.RegisterMailbox(
                mailbox_service_pb2.RegisterMailboxRequest(
                    email_address="later@example.com",
                    service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
                ),
                metadata=auth,
            ),
            "GetMailbox": lambda: service.mailboxes.GetMailbox(
                mailbox_service_pb2.GetMailboxRequest(mailbox_id=registered.id), metadata=auth),
            "ListMailboxes": lambda: service.mailboxes.ListMailboxes(
                mailbox_service_pb2.ListMailboxesRequest(), metadata=auth),
            "StopMailbox": lambda: service.mailboxes.StopMailbox(
                mailbox_service_pb2.StopMailboxRequest(mailbox_id=registered.id), metadata=auth),
            "StreamChanges": lambda: _first_response(service.mailboxes.StreamChanges(
                mailbox_service_pb2.StreamChangesRequest(), metadata=auth)),
            "CreateTenant": lambda: service.admin.CreateTenant(
                admin_service_pb2.CreateTenantRequest(name="while-down"), metadata=operator),
            "ListTenants": lambda: service.admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=operator),
            "CreateApiKey": lambda: service.admin.CreateApiKey(
                admin_service_pb2.CreateApiKeyRequest(tenant_id=tenant_id), metadata=operator),
            "ListApiKeys": lambda: service.admin.ListApiKeys(
                admin_service_pb2.ListApiKeysRequest(tenant_id=tenant_id), metadata=operator),
        }

        server.stop_server()
        try:
            for name, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (name, caught.value)
                assert reason_of(caught.value) == "DATABASE_UNAVAILABLE", name
                assert retry_delay_of(caught.value) is not None and retry_delay_of(caught.value) > 0, name
        finally:
            server.start_server()

        # Back by itself: the same calls succeed again without a restart of mailwatch.
        async def get_works() -> bool:
            try:
                await service.mailboxes.GetMailbox(
                    mailbox_service_pb2.GetMailboxRequest(mailbox_id=registered.id), metadata=auth)
                return True
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return False

        await eventually(get_works, timeout=60, what="GetMailbox recovered")


async def _first_response(call):
    async for response in call:
        return response
