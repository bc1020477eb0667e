"""StreamChanges over gRPC: resume, heartbeats, filters and cursor expiry as a client sees them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import duration_pb2

from mailwatch.api.tokens import decode_cursor
from mailwatch.domain.models import EventType, MessageMetadata, NewEvent
from mailwatch.store import changes
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc, resources_pb2
from tests.fixtures.factory import Rows
from tests.fixtures.pipeline import collect, message_events
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration


async def _mailbox_with_messages(service, auth, email, count):
    sim = service.sim
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, email), metadata=auth)
    ids = [sim.insert_message(email, label_ids=["INBOX"])["id"] for _ in range(count)]
    await collect(service, auth, lambda ev: ids[-1] in [e.message_id for e in ev], mailbox_ids=[mailbox.id])
    return mailbox, ids


async def test_resume_from_a_cursor_continues_exactly_after_it(service):
    _, auth = await service.new_tenant()
    _, ids = await _mailbox_with_messages(service, auth, "resume@example.com", 4)
    events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 4)
    cut = [e.message_id for e in events].index(ids[1])
    rest = await collect(service, auth, lambda ev: len(message_events(ev)) >= 2, cursor=events[cut].cursor)
    assert [e.message_id for e in rest] == ids[2:]


async def test_idle_stream_sends_heartbeats_with_a_resumable_cursor(service):
    _, auth = await service.new_tenant()
    await _mailbox_with_messages(service, auth, "idle@example.com", 1)
    request = mailbox_service_pb2.StreamChangesRequest(
        start_position=mailbox_service_pb2.START_POSITION_NOW,
        heartbeat_interval=duration_pb2.Duration(seconds=1),
    )
    call = service.mailboxes.StreamChanges(request, metadata=auth)
    try:
        response = await call.read()
    finally:
        call.cancel()
    assert not response.events and response.heartbeat.cursor
    # The heartbeat's cursor is a valid place to resume from: the next change follows it.
    message = service.sim.insert_message("idle@example.com", label_ids=["INBOX"])
    resumed = await collect(
        service, auth, lambda ev: message["id"] in [e.message_id for e in ev], cursor=response.heartbeat.cursor
    )
    assert [e.message_id for e in resumed] == [message["id"]]


async def test_event_type_filter(service):
    _, auth = await service.new_tenant()
    mailbox, ids = await _mailbox_with_messages(service, auth, "types@example.com", 2)
    service.sim.delete_message("types@example.com", ids[0])
    events = await collect(
        service, auth, lambda ev: len(ev) >= 1, event_types=[resources_pb2.EVENT_TYPE_MESSAGE_DELETED]
    )
    assert [(e.type, e.message_id) for e in events] == [(resources_pb2.EVENT_TYPE_MESSAGE_DELETED, ids[0])]


async def test_expired_cursor_is_failed_precondition_with_a_reason(service):
    _, auth = await service.new_tenant()
    await _mailbox_with_messages(service, auth, "expire@example.com", 3)
    events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 3)
    async with service.app.sessions() as session, session.begin():
        assert await changes.prune_events(session, datetime.now(timezone.utc) + timedelta(seconds=1)) > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service, auth, lambda ev: True, cursor=events[0].cursor, timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(caught.value)
    assert info.reason == "CURSOR_EXPIRED"
    assert "earliest_cursor" in info.metadata


async def test_a_backlog_of_large_events_arrives_whole_under_the_clients_default_message_limit(service):
    # 600 events carrying ~12 kB of message metadata each: one batch of them is
    # ~7 MB, over the 4 MiB a default client accepts in one message.
    tenant_id, auth = await service.new_tenant()
    tenant_id = uuid.UUID(tenant_id)
    mailbox = await Rows(service.app.sessions).mailbox(tenant_id, "large@example.com")
    metadata = MessageMetadata(headers=(("Subject", "s" * 12_000),), snippet="snippet", size_estimate=12_345)
    new = [NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_ADDED,
                    message_id=f"large-{n:04d}", thread_id="t", metadata=metadata) for n in range(600)]
    async with service.app.sessions() as session, session.begin():
        written = await changes.append_events(session, tenant_id, new)
    sizes = []
    request = mailbox_service_pb2.StreamChangesRequest(
        start_position=mailbox_service_pb2.START_POSITION_EARLIEST, max_batch_size=1000)
    events = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:  # gRPC's default limits
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(request, metadata=auth)
        try:
            async for response in call:
                sizes.append(response.ByteSize())
                events.extend(response.events)
                if len(events) >= len(written):
                    break
        finally:
            call.cancel()
    assert [e.message_id for e in events] == [e.message_id for e in written]  # all, once, in order
    assert [decode_cursor(e.cursor) for e in events] == [e.sequence for e in written]
    assert events[0].metadata.headers[0].value == "s" * 12_000
    assert len(sizes) > 1 and max(sizes) <= 4 * 1024 * 1024
