"""One change-log reader per tenant per process, shared by the tenant's caught-up streams."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, aclosing

import pytest

from mailwatch.domain.models import EventType
from mailwatch.streams import EventBatch, StreamStats

from tests.fixtures.waiting import eventually

from .conftest import append, collect, idle, next_batch, next_item, query

pytestmark = pytest.mark.integration


async def _joined(stream, stats: StreamStats, timeout: float = 10.0) -> asyncio.Future:
    """Ask for the next item and wait until the stream has caught up and joined
    its tenant's feed; returns the pending request for that item."""
    pending = asyncio.ensure_future(anext(stream))
    await eventually(lambda: stats.joins or pending.done(), timeout=timeout)
    assert stats.joins, "the stream never joined the shared reader"
    return pending


async def test_streams_of_a_tenant_share_one_reader(make_streamer, sessions, notifier, world):
    streamer = make_streamer(sessions, notifier, poll_seconds=30)
    count = 20
    async with AsyncExitStack() as stack:
        streams, stats = [], []
        for _ in range(count):
            s = StreamStats()
            stream = await stack.enter_async_context(aclosing(streamer.stream(world.tenant_a, query(), stats=s)))
            assert (await next_item(stream)).position == 0  # the opening heartbeat
            streams.append(stream)
            stats.append(s)
        pending = [asyncio.ensure_future(collect(s, 30)) for s in streams]
        await eventually(lambda: all(s.joins for s in stats), what="every stream joined the feed")
        feed = streamer.feed(world.tenant_a)
        assert feed is not None and len(feed.subscriptions) == count
        reads_before = feed.reads
        written = []
        for i in range(10):
            written += await append(sessions, world.a1 if i % 2 else world.a2, 3, start=i * 10)
        results = await asyncio.gather(*pending)
        for got in results:
            assert [e.sequence for e in got] == [e.sequence for e in written]
        # Each stream read once on its own (finding nothing) before joining; after
        # that only the feed read, at most once per commit whatever the number of streams.
        assert all(s.reads == 1 for s in stats)
        assert feed.reads - reads_before <= 10 + 2


async def test_a_slow_stream_does_not_delay_a_fast_one_and_still_gets_everything_once_in_order(make_streamer, 
    sessions, notifier, world
):
    # A small queue bound so the slow stream overflows quickly.
    streamer = make_streamer(sessions, notifier, poll_seconds=30, max_pending_events=50)
    slow_stats, fast_stats = StreamStats(), StreamStats()
    async with (
        aclosing(streamer.stream(world.tenant_a, query(batch=7), stats=slow_stats)) as slow,
        aclosing(streamer.stream(world.tenant_a, query(batch=7), stats=fast_stats)) as fast,
    ):
        await next_item(slow)  # opening heartbeats
        await next_item(fast)
        fast_pending = await _joined(fast, fast_stats)
        slow_pending = await _joined(slow, slow_stats)
        feed = streamer.feed(world.tenant_a)
        assert feed is not None and len(feed.subscriptions) == 2

        # 40 commits of 5, each taken by the fast consumer before the next is
        # written, while the slow consumer takes nothing at all: if the slow
        # stream could hold the fast one back, this would never finish.
        written, got_fast = [], []
        for i in range(40):
            commit = await append(sessions, world.a1, 5, start=i * 10)
            written += commit
            if fast_pending is not None:
                got_fast += (await fast_pending).events
                fast_pending = None
            if len(got_fast) < len(written):
                got_fast += await collect(fast, len(written) - len(got_fast))
        assert [e.sequence for e in got_fast] == [e.sequence for e in written]
        assert fast_stats.reads == 1 and fast_stats.joins == 1  # shared all along
        # The slow one was dropped from the feed once its queue would pass the bound.
        assert len(feed.subscriptions) == 1
        assert slow_stats.joins == 1

        # Now the slow consumer reads: every event exactly once, in order,
        # first from its queue, then on its own, then shared again.
        first_slow = await slow_pending
        got_slow = list(first_slow.events) + await collect(slow, len(written) - len(first_slow.events))
        assert [e.sequence for e in got_slow] == [e.sequence for e in written]
        assert slow_stats.reads > 1  # it read on its own after being dropped
        assert slow_stats.max_queued <= 50  # its queue never outgrew the bound
        more = await append(sessions, world.a1, 2, start=9000)
        assert [e.sequence for e in await collect(slow, 2)] == [e.sequence for e in more]
        assert [e.sequence for e in await collect(fast, 2)] == [e.sequence for e in more]
    assert slow_stats.joins == 2  # caught up again and rejoined


async def test_shared_batches_respect_each_streams_filter_and_batch_size(make_streamer, sessions, notifier, world):
    streamer = make_streamer(sessions, notifier, poll_seconds=30)
    stats_all, stats_a2 = StreamStats(), StreamStats()
    deleted_on_a2 = query(mailbox_ids=[world.a2.id], types=[EventType.MESSAGE_DELETED], batch=2, heartbeat=0.5)
    async with (
        aclosing(streamer.stream(world.tenant_a, query(batch=4), stats=stats_all)) as everything,
        aclosing(streamer.stream(world.tenant_a, deleted_on_a2, stats=stats_a2)) as selective,
    ):
        await next_item(everything)
        await next_item(selective)
        pending_all = await _joined(everything, stats_all)
        pending_a2 = await _joined(selective, stats_a2)
        written = await append(sessions, world.a1, 3, EventType.MESSAGE_DELETED)
        written += await append(sessions, world.a2, 5, EventType.MESSAGE_DELETED, start=100)
        written += await append(sessions, world.a2, 2, EventType.MESSAGE_ADDED, start=200)

        first = await pending_all
        got_all = list(first.events) + await collect(everything, len(written) - len(first.events))
        assert [e.sequence for e in got_all] == [e.sequence for e in written]

        wanted = [e for e in written if e.mailbox_id == world.a2.id and e.type is EventType.MESSAGE_DELETED]
        batches = [await pending_a2]
        while sum(len(b.events) for b in batches if isinstance(b, EventBatch)) < len(wanted):
            batches.append(await next_item(selective))
        batches = [b for b in batches if isinstance(b, EventBatch)]
        assert [len(b.events) for b in batches] == [2, 2, 1]
        assert [e.sequence for b in batches for e in b.events] == [e.sequence for e in wanted]
        # Idle heartbeats move on past the rows the filter skipped.
        while (item := await next_item(selective)).position != written[-1].sequence:
            assert not isinstance(item, EventBatch)
    assert stats_a2.reads == 1 and stats_all.reads == 1


async def test_the_reader_stops_when_its_last_stream_ends(make_streamer, sessions, notifier, world):
    streamer = make_streamer(sessions, notifier, poll_seconds=30)
    stats = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(), stats=stats)) as stream:
        await next_item(stream)
        pending = await _joined(stream, stats)
        feed = streamer.feed(world.tenant_a)
        assert feed is not None
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    assert streamer.feed(world.tenant_a) is None and feed.closed
    # And the next stream starts a new one that works.
    again = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(), stats=again)) as stream:
        await next_item(stream)
        pending = asyncio.ensure_future(next_batch(stream))
        await idle(again)
        written = await append(sessions, world.a1, 1)
        assert [e.id for e in (await pending).events] == [written[0].id]
