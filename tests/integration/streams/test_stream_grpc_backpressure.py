"""Through a real grpc.aio server: a slow client keeps the server's read-ahead bounded.

grpc.aio drives an async-generator handler as `async for m in handler(): await
context.write(m)`, so the streamer is resumed only when the transport accepted
the previous message. Read-ahead is then one batch in the generator plus what
HTTP/2 flow control lets sit in socket buffers and the client's window, and
does not grow with the backlog.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import grpc
import pytest

from mailwatch.api.tokens import decode_cursor
from mailwatch.api.validation import StartKind
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes
from mailwatch.streams import StreamStats, to_response
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

from .conftest import query

pytestmark = pytest.mark.integration

TOTAL = 20_000
BATCH = 100


class _StreamOnly(mailbox_service_pb2_grpc.MailboxServiceServicer):
    def __init__(self, streamer, tenant_id, stats):
        self.streamer, self.tenant_id, self.stats = streamer, tenant_id, stats

    async def StreamChanges(self, request, context):
        q = query(StartKind.EARLIEST, batch=BATCH)
        async with aclosing(self.streamer.stream(self.tenant_id, q, stats=self.stats)) as stream:
            async for item in stream:
                yield to_response(item)


async def test_a_slow_grpc_client_bounds_what_the_server_reads(streamer, sessions, world):
    events = [
        NewEvent(mailbox_id=world.a1.id, email_address=world.a1.email_address, type=EventType.MESSAGE_ADDED,
                 message_id=f"message-{i:08d}", thread_id=f"thread-{i:08d}", label_ids=("INBOX", "UNREAD"))
        for i in range(TOTAL)
    ]
    async with sessions() as session, session.begin():
        written = await changes.append_events(session, world.tenant_a, events)

    stats = StreamStats()
    server = grpc.aio.server()
    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server(_StreamOnly(streamer, world.tenant_a, stats), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received, last = 0, 0
    ahead_while_slow = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
                mailbox_service_pb2.StreamChangesRequest()
            )
            async for response in call:
                if not response.events:
                    continue
                sequences = [decode_cursor(e.cursor) for e in response.events]
                assert sequences[0] > last
                last = sequences[-1]
                received += len(sequences)
                if received < TOTAL // 2:
                    await asyncio.sleep(0.02)  # slow for the first half
                    ahead_while_slow.append(stats.events_read - received)
                if received >= TOTAL:
                    break
            call.cancel()
    finally:
        await server.stop(None)
    assert received == TOTAL and last == written[-1].sequence
    # Far from the whole backlog. What is read ahead is one batch in the
    # generator plus what HTTP/2 flow-control windows hold (a few hundred KB:
    # measured 1 batch on a quiet machine, 12 under heavy load); without
    # backpressure it would be thousands of events within the slow half.
    assert max(ahead_while_slow) <= TOTAL // 8, max(ahead_while_slow)
    assert stats.reads == TOTAL // BATCH
