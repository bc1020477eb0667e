"""Through a real grpc.aio server: a slow client keeps the server's read-ahead bounded.

What the product guarantees: a stream reads the change log only when the
consumer asks for the next item, so the streamer itself holds at most one
batch (`max_batch_size` events) beyond what the transport has accepted, whatever
the backlog. grpc.aio drives an async-generator handler as `async for m in
handler(): await context.write(m)`, so the streamer is resumed only when the
transport took the previous message.

What it does not control: how much the transport buffers. That is the
receiver's HTTP/2 flow-control window, and gRPC's BDP probing grows it with the
measured bandwidth-delay product (to megabytes on loopback, and more under
load: thousands of events). This test therefore pins the client's windows
(BDP probing off, a fixed 64 KiB stream window) so that what sits in transit
is a known number of bytes, and checks read-ahead against a bound computed from
that window and the batch size, not a measured figure.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import grpc
import pytest

from mailwatch.api.convert import stream_responses
from mailwatch.api.tokens import decode_cursor
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes
from mailwatch.streams import StartKind, StreamStats
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

from .conftest import query

pytestmark = pytest.mark.integration

TOTAL = 20_000
BATCH = 100
# The receiver's windows, fixed: with BDP probing on, gRPC resizes them at will.
WINDOW_BYTES = 64 * 1024
FIXED_WINDOW_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", WINDOW_BYTES)]


class _StreamOnly(mailbox_service_pb2_grpc.MailboxServiceServicer):
    def __init__(self, streamer, tenant_id, stats):
        self.streamer, self.tenant_id, self.stats = streamer, tenant_id, stats

    async def StreamChanges(self, request, context):
        q = query(StartKind.EARLIEST, batch=BATCH)
        async with aclosing(self.streamer.stream(self.tenant_id, q, stats=self.stats)) as stream:
            async for item in stream:
                for response in stream_responses(item):
                    yield response


async def test_a_slow_grpc_client_bounds_what_the_server_reads(streamer, sessions, world):
    events = [
        NewEvent(mailbox_id=world.a1.id, email_address=world.a1.email_address, type=EventType.MESSAGE_ADDED,
                 message_id=f"message-{i:08d}", thread_id=f"thread-{i:08d}", label_ids=("INBOX", "UNREAD"))
        for i in range(TOTAL)
    ]
    async with sessions() as session, session.begin():
        written = await changes.append_events(session, world.tenant_a, events)

    stats = StreamStats()
    server = grpc.aio.server(options=FIXED_WINDOW_OPTIONS)
    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server(_StreamOnly(streamer, world.tenant_a, stats), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received, last = 0, 0
    ahead_while_slow = []
    smallest_event_bytes = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=FIXED_WINDOW_OPTIONS) as channel:
            call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
                mailbox_service_pb2.StreamChangesRequest()
            )
            async for response in call:
                if not response.events:
                    continue
                sequences = [decode_cursor(e.cursor) for e in response.events]
                event_bytes = min(e.ByteSize() for e in response.events)
                smallest_event_bytes = min(event_bytes, smallest_event_bytes or event_bytes)
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
    # The product's own bound: the generator never ran more than one batch
    # ahead of what the transport accepted.
    assert stats.max_read_ahead <= BATCH, stats.max_read_ahead
    # End to end: that batch, one message inside the server's transport and one
    # being handed to the client, plus what the pinned window holds in transit
    # (the stream window; the connection window is at least as large but this
    # is the only stream on it).
    in_window = WINDOW_BYTES // smallest_event_bytes
    bound = 3 * BATCH + in_window
    assert bound < TOTAL // 8  # still far from the backlog: a bound that means something
    assert max(ahead_while_slow) <= bound, (max(ahead_while_slow), bound)
    # One read per batch; gRPC may ask the stream for one more item after the
    # last batch before the client's cancel arrives, and that read finds the end.
    assert TOTAL // BATCH <= stats.reads <= TOTAL // BATCH + 1
