"""A slow consumer never makes the server read ahead more than one batch."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from mailwatch.streams import StartKind
from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes
from mailwatch.streams import StreamStats

from .conftest import next_batch, query

pytestmark = pytest.mark.integration

TOTAL = 20_000
BATCH = 250


async def test_a_slow_consumer_holds_at_most_one_batch_read_ahead(streamer, sessions, world):
    events = [
        NewEvent(mailbox_id=world.a1.id, email_address=world.a1.email_address, type=EventType.MESSAGE_ADDED,
                 message_id=f"m{i}")
        for i in range(TOTAL)
    ]
    async with sessions() as session, session.begin():
        written = await changes.append_events(session, world.tenant_a, events)

    stats = StreamStats()
    taken = 0
    last_sequence = 0
    samples = []

    async def watch():
        while True:  # sample from outside while the consumer dawdles
            samples.append(stats.events_read - taken)
            await asyncio.sleep(0.002)  # the sampling interval

    watcher = asyncio.create_task(watch())
    try:
        async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, batch=BATCH), stats=stats)) as s:
            while taken < TOTAL:
                item = await next_batch(s)
                assert item.events[0].sequence > last_sequence
                last_sequence = item.events[-1].sequence
                taken += len(item.events)
                # Whatever the stream read, the consumer holds it now: nothing more is buffered.
                assert stats.events_read == taken
                await asyncio.sleep(0.01)  # a slow consumer
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert taken == TOTAL and last_sequence == written[-1].sequence
    assert stats.batches == stats.reads == TOTAL // BATCH  # one read per batch, nothing read in advance
    assert max(samples) <= BATCH
    assert stats.max_read_ahead <= BATCH
