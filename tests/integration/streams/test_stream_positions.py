"""Start positions, ordering, filters, batching, heartbeats, isolation, resume."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from contextlib import aclosing

import pytest

from mailwatch.api.tokens import decode_cursor, encode_cursor
from mailwatch.streams import StartKind
from mailwatch.domain.errors import InvalidCursor, NotFound
from mailwatch.domain.models import EventType
from mailwatch.api.convert import stream_responses
from mailwatch.streams import EventBatch, Heartbeat, StreamStats

from tests.fixtures.waiting import stays

from .conftest import append, collect, idle, next_batch, next_item, query

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("start", [StartKind.NOW, StartKind.EARLIEST, StartKind.CURSOR])
async def test_the_stream_opens_with_a_heartbeat_at_its_start_position(streamer, sessions, world, start):
    events = await append(sessions, world.a1, 3)
    expected = {StartKind.NOW: events[-1].sequence, StartKind.EARLIEST: 0, StartKind.CURSOR: events[0].sequence}
    after = events[0].sequence if start is StartKind.CURSOR else None
    async with aclosing(streamer.stream(world.tenant_a, query(start, after))) as stream:
        first = await next_item(stream)
    assert isinstance(first, Heartbeat) and first.position == expected[start]


async def test_start_now_skips_history_and_delivers_new_events(streamer, sessions, world):
    await append(sessions, world.a1, 3)
    stats = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.NOW), stats=stats)) as stream:
        pending = asyncio.ensure_future(next_batch(stream))
        await idle(stats)  # it has read from NOW and found nothing
        assert not pending.done()
        new = await append(sessions, world.a1, 2, start=100)
        batch = await pending
    assert [e.sequence for e in batch.events] == [e.sequence for e in new]
    assert batch.position == new[-1].sequence


async def test_start_earliest_delivers_everything_retained_in_order(streamer, sessions, world):
    first = await append(sessions, world.a1, 3)
    second = await append(sessions, world.a2, 2, EventType.LABELS_ADDED)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST))) as stream:
        events = await collect(stream, 5)
    assert [e.id for e in events] == [e.id for e in first + second]
    assert events[3].type is EventType.LABELS_ADDED and events[3].mailbox_id == world.a2.id
    assert events[0].message_id == "m0" and events[0].label_ids == ("INBOX",)


async def test_cursor_resumes_after_that_event(streamer, sessions, world):
    events = await append(sessions, world.a1, 5)
    cursor = decode_cursor(encode_cursor(events[1].sequence))
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, cursor))) as stream:
        got = await collect(stream, 3)
    assert [e.sequence for e in got] == [e.sequence for e in events[2:]]


async def test_cursor_at_latest_waits_for_new_events(streamer, sessions, world):
    events = await append(sessions, world.a1, 2)
    stats = StreamStats()
    cursor = query(StartKind.CURSOR, events[-1].sequence)
    async with aclosing(streamer.stream(world.tenant_a, cursor, stats=stats)) as stream:
        pending = asyncio.ensure_future(next_batch(stream))
        await idle(stats)  # it has read from the cursor and found nothing
        assert not pending.done()
        new = await append(sessions, world.a1, 1)
        assert [e.sequence for e in (await pending).events] == [new[0].sequence]


async def test_cursor_beyond_the_tenants_log_is_invalid(streamer, sessions, world):
    # Tenant B's events draw from the same global sequence: its cursor is not A's position.
    b_events = await append(sessions, world.b1, 3)
    await append(sessions, world.a1, 1)
    with pytest.raises(InvalidCursor):
        async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, b_events[-1].sequence + 10))) as s:
            await anext(s)


async def test_order_is_commit_order_across_concurrent_writers(streamer, sessions, world):
    stats = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.NOW, batch=37), stats=stats)) as stream:
        pending = asyncio.ensure_future(collect(stream, 300, timeout=30))
        await idle(stats)  # NOW is fixed before the writers start

        async def writer(mailbox, rounds):
            written = []
            for i in range(rounds):
                written += await append(sessions, mailbox, 1 + i % 5, start=i * 10)
            return written

        results = await asyncio.gather(writer(world.a1, 50), writer(world.a2, 50))
        written = sorted(e.sequence for batch in results for e in batch)
        got = await pending
    assert len(written) == 300
    assert [e.sequence for e in got] == written  # complete, ascending, no duplicates


async def test_filters_by_mailbox_and_type_and_position_still_advances(streamer, sessions, world):
    await append(sessions, world.a1, 3, EventType.MESSAGE_ADDED)
    wanted = await append(sessions, world.a2, 2, EventType.MESSAGE_DELETED)
    await append(sessions, world.a2, 2, EventType.MESSAGE_ADDED)
    tail = await append(sessions, world.a1, 4, EventType.MESSAGE_DELETED)  # wrong mailbox
    q = query(
        StartKind.EARLIEST,
        mailbox_ids=[world.a2.id],
        types=[EventType.MESSAGE_DELETED],
        heartbeat=0.3,
    )
    async with aclosing(streamer.stream(world.tenant_a, q)) as stream:
        batch = await next_batch(stream)
        heartbeat = await next_item(stream)
    assert [e.id for e in batch.events] == [e.id for e in wanted]
    # The batch already scanned past the rows that did not match ...
    assert batch.position == tail[-1].sequence
    # ... and the idle heartbeat carries that position: resuming from it skips nothing wanted.
    assert isinstance(heartbeat, Heartbeat) and heartbeat.position == tail[-1].sequence


async def test_a_selective_filter_scans_a_long_log_in_bounded_steps(make_streamer, sessions, notifier, world):

    streamer = make_streamer(sessions, notifier, poll_seconds=30, scan_rows=100)
    await append(sessions, world.a1, 1050)
    wanted = await append(sessions, world.a2, 1)
    stats = StreamStats()
    q = query(StartKind.EARLIEST, mailbox_ids=[world.a2.id], batch=10)
    async with aclosing(streamer.stream(world.tenant_a, q, stats=stats)) as stream:
        batch = await next_batch(stream)
    assert [e.id for e in batch.events] == [wanted[0].id]
    assert stats.reads == 11  # 1051 rows, at most 100 per statement


async def test_batches_respect_max_batch_size(streamer, sessions, world):
    events = await append(sessions, world.a1, 1050)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, batch=100))) as stream:
        sizes, got = [], []
        while len(got) < 1050:
            batch = await next_batch(stream)
            sizes.append(len(batch.events))
            got.extend(batch.events)
            assert batch.position == batch.events[-1].sequence
    assert sizes == [100] * 10 + [50]
    assert [e.sequence for e in got] == [e.sequence for e in events]


async def test_idle_heartbeats_carry_a_cursor_that_resumes_exactly(streamer, sessions, world):
    events = await append(sessions, world.a1, 3)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, heartbeat=0.3))) as stream:
        assert len((await next_batch(stream)).events) == 3
        loop = asyncio.get_running_loop()
        started = loop.time()
        heartbeat = await next_item(stream)
        assert 0.2 <= loop.time() - started < 3
        second = await next_item(stream)
    assert isinstance(heartbeat, Heartbeat) and isinstance(second, Heartbeat)
    assert heartbeat.position == events[-1].sequence
    assert heartbeat.server_time.tzinfo is not None
    (response,) = stream_responses(heartbeat)
    assert response.heartbeat.cursor == encode_cursor(events[-1].sequence)

    later = await append(sessions, world.a1, 2)
    resumed_from = decode_cursor(response.heartbeat.cursor)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, resumed_from))) as stream:
        got = await collect(stream, 2)
    assert [e.id for e in got] == [e.id for e in later]


async def test_an_empty_tenant_heartbeats_at_a_resumable_position(streamer, sessions, world):
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, heartbeat=0.2))) as stream:
        heartbeat = await next_item(stream)
    assert isinstance(heartbeat, Heartbeat)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, heartbeat.position))) as stream:
        pending = asyncio.ensure_future(next_batch(stream))
        new = await append(sessions, world.a1, 1)
        assert [e.id for e in (await pending).events] == [new[0].id]


async def test_tenants_never_see_each_others_events(streamer, sessions, world):
    async with (
        aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST))) as stream_a,
        aclosing(streamer.stream(world.tenant_b, query(StartKind.EARLIEST))) as stream_b,
    ):
        a_events = await append(sessions, world.a1, 3)
        b_events = await append(sessions, world.b1, 2)
        got_a = await collect(stream_a, 3)
        got_b = await collect(stream_b, 2)
        more_a = await append(sessions, world.a2, 1)
        assert [e.id for e in await collect(stream_a, 1)] == [more_a[0].id]
        b_after = asyncio.ensure_future(next_batch(stream_b))
        # Tenant b's stream gets nothing of tenant a's: a's event, delivered to a's stream
        # already, would reach b's within this time if isolation failed (both are woken by
        # the same commit's NOTIFY).
        await stays(lambda: not b_after.done(), 0.5, what="tenant b's stream stays empty")
        b_after.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await b_after
    assert [e.id for e in got_a] == [e.id for e in a_events]
    assert [e.id for e in got_b] == [e.id for e in b_events]
    assert {e.tenant_id for e in got_b} == {world.tenant_b}


async def test_another_tenants_mailbox_in_the_filter_is_not_found(streamer, sessions, world):
    for mailbox_id in (world.a1.id, uuid.uuid4()):
        with pytest.raises(NotFound) as raised:
            async with aclosing(streamer.stream(world.tenant_b, query(mailbox_ids=[world.b1.id, mailbox_id]))) as s:
                await anext(s)
        assert raised.value.metadata == {"mailbox_id": str(mailbox_id)}


async def test_resuming_from_the_last_cursor_gives_no_gap_and_no_duplicate(streamer, sessions, world):
    stop_writing = asyncio.Event()
    written = []

    async def writer():
        i = 0
        while not stop_writing.is_set():
            written.extend(await append(sessions, world.a1 if i % 2 else world.a2, 1 + i % 3, start=i * 10))
            i += 1
            await asyncio.sleep(0.005)  # pace the writer so the reader's reconnects fall between commits

    writing = asyncio.create_task(writer())
    delivered = []
    last_cursor = encode_cursor(0)
    try:
        for round_ in range(6):
            start = decode_cursor(last_cursor)
            q = query(StartKind.CURSOR, start, batch=7) if round_ else query(StartKind.EARLIEST, batch=7)
            async with aclosing(streamer.stream(world.tenant_a, q)) as stream:
                for _ in range(3):  # take a few batches, then hang up mid-stream
                    batch = await next_batch(stream)
                    delivered.extend(batch.events)
                    last_cursor = stream_responses(batch)[-1].events[-1].cursor
    finally:
        stop_writing.set()
        await writing
    # Drain whatever was written after the last hang-up.
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, decode_cursor(last_cursor)))) as s:
        remaining = len(written) - len(delivered)
        if remaining:
            delivered.extend(await collect(s, remaining))
    assert [e.sequence for e in delivered] == sorted(e.sequence for e in written)


async def test_a_stopped_mailbox_can_still_be_filtered_on(streamer, sessions, world):
    # Its MAILBOX_STOPPED event is exactly what a consumer filtering on it wants to see.
    from mailwatch.store import mailboxes

    async with sessions() as session, session.begin():
        await mailboxes.mark_stopped(session, world.tenant_a, world.a2.id)
    events = await append(sessions, world.a2, 1, EventType.MAILBOX_STOPPED)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, mailbox_ids=[world.a2.id]))) as s:
        batch = await next_batch(s)
    assert isinstance(batch, EventBatch) and [e.id for e in batch.events] == [e.id for e in events]
