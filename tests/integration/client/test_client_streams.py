"""`stream_changes` against a real mailwatch: resuming across a server restart,
checkpoints, cursor expiry, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from sqlalchemy import text

from mailwatch_client import (
    AsyncMailwatchClient,
    CursorExpiredError,
    EventType,
    FileCheckpointStore,
    InvalidCursorError,
    MailwatchClient,
    MemoryCheckpointStore,
    NotFoundError,
    RetryConfig,
)
from mailwatch.api.tokens import decode_cursor
from mailwatch.secrets import generate_key
from tests.fixtures.waiting import eventually, stays
from mailwatch_devstack.ports import free_port
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

MESSAGE_ADDED = EventType.Value("EVENT_TYPE_MESSAGE_ADDED")
WATCH_STARTED = EventType.Value("EVENT_TYPE_WATCH_STARTED")
FAST_RECONNECT = RetryConfig(initial_backoff=0.1, max_backoff=0.5, max_attempts=0)


def added_ids(events) -> list[str]:
    return [e.message_id for e in events if e.type == MESSAGE_ADDED]


async def test_async_stream_resumes_across_a_server_restart_without_duplicates_or_gaps(make_service, tmp_path):
    # Same address and secret key for both runs (stored credentials must stay readable).
    same = {"listen": f"127.0.0.1:{free_port()}", "secret_keys": (generate_key(),)}
    checkpoint = FileCheckpointStore(tmp_path / "cursor")
    async with contextlib.AsyncExitStack() as cleanup:
        running = contextlib.AsyncExitStack()  # the first server, closed mid-test
        cleanup.push_async_callback(running.aclose)
        service = await running.enter_async_context(make_service(**same))
        _, auth = await service.new_tenant()
        sim = service.sim
        client = AsyncMailwatchClient(service.target, api_key_of(auth), stream_retry=FAST_RECONNECT)
        cleanup.push_async_callback(client.close)
        await client.register_mailbox("ida@example.com", credentials=sa_credentials(sim, "ida@example.com"))
        before = [sim.insert_message("ida@example.com", label_ids=["INBOX"])["id"] for _ in range(3)]

        stream = client.stream_changes(start="earliest", checkpoint=checkpoint, heartbeat_interval=1)
        events: list = []

        async def consume():
            async for event in stream:
                events.append(event)

        consumer = asyncio.create_task(consume())
        try:
            await eventually(lambda: len(added_ids(events)) >= 3)

            await running.aclose()  # the server goes away (graceful stop) ...
            during = [sim.insert_message("ida@example.com", label_ids=["INBOX"])["id"] for _ in range(2)]
            await eventually(lambda: stream.reconnects >= 2 or consumer.done())  # ... the iterator keeps trying
            assert not consumer.done(), consumer

            async with make_service(**same) as restarted:  # ... and comes back on the same address
                after = [restarted.sim.insert_message("ida@example.com", label_ids=["INBOX"])["id"]]
                await eventually(lambda: len(added_ids(events)) >= 6)
                # Nothing else may arrive: a duplicate resent after the reconnect would come
                # within a heartbeat or two (the interval is 1 s).
                await stays(lambda: len(added_ids(events)) == 6, 1.5, what="no duplicate arrives")
                assert stream.reconnects >= 1
        finally:
            await stream.aclose()
            await asyncio.wait_for(consumer, 10)

    assert added_ids(events) == before + during + after
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    # The checkpoint holds the last event's position (or a later heartbeat's).
    assert checkpoint.load() is not None and stream.cursor == checkpoint.load()


async def test_sync_stream_resumes_across_a_server_restart(make_service):
    same = {"listen": f"127.0.0.1:{free_port()}", "secret_keys": (generate_key(),)}
    events: list = []
    first = make_service(**same)
    service = await first.__aenter__()
    try:
        _, auth = await service.new_tenant()
        sim = service.sim
        key = api_key_of(auth)
        credentials = sa_credentials(sim, "jo@example.com")
        client = MailwatchClient(service.target, key, stream_retry=FAST_RECONNECT)
        await asyncio.to_thread(client.register_mailbox, "jo@example.com", credentials=credentials)
        before = sim.insert_message("jo@example.com", label_ids=["INBOX"])["id"]
        stream = client.stream_changes(start="earliest", heartbeat_interval=1)

        def consume():
            for event in stream:
                events.append(event)

        consumer = asyncio.create_task(asyncio.to_thread(consume))
        await eventually(lambda: added_ids(events) == [before])
    finally:
        await first.__aexit__(None, None, None)
    try:
        during = sim.insert_message("jo@example.com", label_ids=["INBOX"])["id"]
        async with make_service(**same):
            await eventually(lambda: len(added_ids(events)) >= 2)
    finally:
        stream.close()  # from another thread: ends the blocked iteration
        await asyncio.wait_for(consumer, 10)
        client.close()
    assert added_ids(events) == [before, during]
    assert len({e.id for e in events}) == len(events)
    assert stream.reconnects >= 1


async def test_checkpoint_round_trip_continues_where_the_last_run_stopped(service, tmp_path):
    _, auth = await service.new_tenant()
    sim = service.sim
    store = FileCheckpointStore(tmp_path / "state" / "cursor")
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        await client.register_mailbox("kim@example.com", credentials=sa_credentials(sim, "kim@example.com"))
        first = [sim.insert_message("kim@example.com", label_ids=["INBOX"])["id"] for _ in range(2)]

        seen: list = []
        async with client.stream_changes(start="earliest", checkpoint=store) as stream:
            async for event in stream:
                seen.append(event)
                if added_ids(seen) == first:
                    break
        # Breaking out means "done with everything before the last event"; the
        # last one is redelivered next run unless the loop asked for more.
        saved = store.load()
        assert saved is not None and saved == stream.cursor == seen[-2].cursor

        later = sim.insert_message("kim@example.com", label_ids=["INBOX"])["id"]
        resumed: list = []
        # `start` is ignored: the checkpoint decides.
        async with client.stream_changes(start="now", checkpoint=FileCheckpointStore(store.path)) as stream:
            async for event in stream:
                resumed.append(event)
                if later in added_ids(resumed):
                    break
        assert added_ids(resumed) == [first[-1], later]
        assert resumed[0].id == seen[-1].id


async def test_heartbeats_advance_the_cursor(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        await client.register_mailbox("lou@example.com", credentials=sa_credentials(sim, "lou@example.com"))
        async with client.stream_changes(start="earliest") as everything:
            watch_started = await anext(everything)
        assert watch_started.type == WATCH_STARTED
        store = MemoryCheckpointStore()
        # Only MESSAGE_DELETED: the WATCH_STARTED event is filtered out, yet
        # heartbeats move the position past it (the opening one is at the start, before it).
        stream = client.stream_changes(start="earliest", event_types=["MESSAGE_DELETED"], checkpoint=store,
                                       heartbeat_interval=1)
        task = asyncio.create_task(anext(stream))

        def saved_past_the_filtered_event() -> bool:
            # The client saves a heartbeat's cursor after taking it, from a thread: wait for both.
            cursor = stream.cursor
            return (cursor is not None and store.load() == cursor
                    and decode_cursor(cursor) >= decode_cursor(watch_started.cursor))

        await eventually(saved_past_the_filtered_event, what="a heartbeat's cursor past the event, saved")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.aclose()


async def test_expired_cursor_raises_cursor_expired_instead_of_retrying(service):
    tenant_id, auth = await service.new_tenant()
    sim = service.sim
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        await client.register_mailbox("max@example.com", credentials=sa_credentials(sim, "max@example.com"))
        sim.insert_message("max@example.com", label_ids=["INBOX"])
        events: list = []
        async with client.stream_changes(start="earliest") as stream:
            async for event in stream:
                events.append(event)
                if added_ids(events):
                    break
        old_cursor = events[0].cursor
        # Retention pruned everything up to the newest event.
        async with service.app.sessions() as session, session.begin():
            await session.execute(
                text("UPDATE tenants SET pruned_through_sequence = "
                     "(SELECT max(sequence) FROM change_events WHERE tenant_id = :t) WHERE id = :t"),
                {"t": tenant_id},
            )
        started = time.monotonic()
        with pytest.raises(CursorExpiredError) as caught:
            async with client.stream_changes(start=old_cursor) as stream:
                await anext(stream)
        assert time.monotonic() - started < 5
        assert caught.value.reason == "CURSOR_EXPIRED"
        earliest = caught.value.earliest_cursor
        assert earliest
        # The documented way out: resume from the earliest retained position.
        more = sim.insert_message("max@example.com", label_ids=["INBOX"])["id"]
        async with client.stream_changes(start=earliest) as stream:
            event = await asyncio.wait_for(anext(stream), 20)
        assert event.message_id == more

        def sync_expired():
            with MailwatchClient(service.target, api_key_of(auth)) as sync_client:
                with pytest.raises(CursorExpiredError):
                    next(sync_client.stream_changes(start=old_cursor))

        await asyncio.to_thread(sync_expired)


async def test_stream_errors_that_are_not_transient_end_the_iteration(service):
    _, auth = await service.new_tenant()
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        with pytest.raises(InvalidCursorError) as caught:
            await anext(client.stream_changes(start=b"not-a-cursor"))
        assert caught.value.field_violations[0].field == "cursor"
        with pytest.raises(NotFoundError):
            await anext(client.stream_changes(mailbox_ids=["00000000-0000-0000-0000-000000000000"]))
