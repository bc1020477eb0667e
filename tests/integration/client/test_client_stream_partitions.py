"""StreamChanges split by partition: N consumers (the Python client's `partition=`)
each get one share of a tenant's mailboxes; every event reaches exactly one of them,
in order, from the backlog and live, and a partition resumes from its own cursor."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from mailwatch.api.tokens import decode_cursor
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.domain.stream_partitions import partition_of
from mailwatch.store import changes
from mailwatch.v1 import mailbox_service_pb2
from mailwatch_client import AsyncMailwatchClient
from tests.fixtures.factory import Rows
from tests.fixtures.rpc import error_details
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of

pytestmark = pytest.mark.integration

COUNT = 3


async def _append_round(sessions, tenant_id, mailboxes, round_no):
    """One event per mailbox, interleaved across partitions, and one tenant-wide TEST event."""
    events = [NewEvent(mailbox_id=m.id, email_address=m.email_address, type=EventType.MESSAGE_ADDED,
                       message_id=f"r{round_no}-{n}") for n, m in enumerate(mailboxes)]
    events.append(NewEvent(mailbox_id=None, email_address=None, type=EventType.TEST, detail={"round": round_no}))
    async with sessions() as session, session.begin():
        return await changes.append_events(session, tenant_id, events)


async def test_each_event_reaches_exactly_one_partition_in_order(service, sessions):
    tenant_id, auth = await service.new_tenant()
    rows = Rows(sessions)
    mailboxes = [await rows.mailbox(uuid.UUID(tenant_id), f"p{n}@example.com") for n in range(24)]
    assert len({partition_of(m.id, COUNT) for m in mailboxes}) == COUNT  # every partition has mailboxes
    backlog = await _append_round(sessions, uuid.UUID(tenant_id), mailboxes, 1)

    client = AsyncMailwatchClient(service.target, api_key_of(auth))
    received: dict[int, list] = {index: [] for index in range(COUNT)}
    streams = [client.stream_changes(start="earliest", partition=(index, COUNT), heartbeat_interval=1)
               for index in range(COUNT)]

    async def consume(index):
        async for event in streams[index]:
            received[index].append(event)

    consumers = [asyncio.create_task(consume(index)) for index in range(COUNT)]
    try:
        await eventually(lambda: sum(map(len, received.values())) >= len(backlog))
        live = await _append_round(sessions, uuid.UUID(tenant_id), mailboxes, 2)  # through the live feed
        expected = backlog + live
        await eventually(lambda: sum(map(len, received.values())) >= len(expected))
    finally:
        for stream in streams:
            await stream.aclose()
        await asyncio.gather(*consumers, return_exceptions=True)
        await client.close()

    delivered = [event.id for events in received.values() for event in events]
    assert sorted(delivered) == sorted(str(e.id) for e in expected)  # all of them, none twice
    for index, events in received.items():
        for event in events:
            assert partition_of(uuid.UUID(event.mailbox_id) if event.mailbox_id else None, COUNT) == index
        sequences = [decode_cursor(event.cursor) for event in events]
        assert sequences == sorted(sequences), f"partition {index} out of order"
        # The tenant-wide TEST events are partition 0's.
        assert (index == 0) == any(not event.mailbox_id for event in events)


async def test_a_partition_resumes_from_its_own_cursor(service, sessions):
    tenant_id, auth = await service.new_tenant()
    rows = Rows(sessions)
    mailboxes = [await rows.mailbox(uuid.UUID(tenant_id), f"q{n}@example.com") for n in range(12)]
    appended = await _append_round(sessions, uuid.UUID(tenant_id), mailboxes, 1)
    mine = [str(e.id) for e in appended if partition_of(e.mailbox_id, 2) == 1]
    assert len(mine) >= 3

    client = AsyncMailwatchClient(service.target, api_key_of(auth))
    try:
        first = []
        async with client.stream_changes(start="earliest", partition=(1, 2)) as stream:
            async for event in stream:
                first.append(event)
                if len(first) == 2:
                    break
        rest = []
        async with client.stream_changes(start=first[-1].cursor, partition=(1, 2)) as stream:
            async for event in stream:
                rest.append(event)
                if len(rest) == len(mine) - 2:
                    break
    finally:
        await client.close()
    assert [e.id for e in first + rest] == mine


@pytest.mark.parametrize(("index", "count", "field"), [
    (0, -1, "partition.count"), (0, 1025, "partition.count"), (3, 3, "partition.index"), (-1, 3, "partition.index"),
    (1, 0, "partition.index"),
])
async def test_a_bad_partition_is_invalid_argument_with_the_field(service, index, count, field):
    _, auth = await service.new_tenant()
    request = mailbox_service_pb2.StreamChangesRequest(
        start_position=mailbox_service_pb2.START_POSITION_EARLIEST,
        partition=mailbox_service_pb2.StreamPartition(index=index, count=count))
    call = service.mailboxes.StreamChanges(request, metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = error_details(caught.value)
    assert [v.field for v in bad_request.field_violations] == [field]
