"""StreamChanges over gRPC: resume, heartbeats, filters and cursor expiry as a client sees them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import duration_pb2

from mailwatch.store import changes
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
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
        await collect(service, auth, lambda ev: True, cursor=events[0].cursor, timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(caught.value)
    assert info.reason == "CURSOR_EXPIRED"
    assert "earliest_cursor" in info.metadata
