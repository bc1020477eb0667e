"""Waking: NOTIFY from any connection, the fallback poll, reconnecting the listener."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from contextlib import aclosing

import pytest

from mailwatch.streams import StartKind
from mailwatch.store import create_engine, session_factory
from mailwatch.streams import ChangeNotifier, StreamStats
from tests.fixtures.waiting import eventually

from .conftest import append, idle, next_batch, query, terminate_backends

pytestmark = pytest.mark.integration

# Delivered by a wake-up or by the short poll under test, not by the 30 s poll: that one comes
# 30 s after the reader began to wait (next_batch gives up after 20 or 30 s), so within 10 s of
# the commit only the former delivers unless 20 s passed between the wait and the commit. A
# commit and its delivery take milliseconds on a quiet host; 10 s is room a loaded one cannot eat.
PROMPT_SECONDS = 10.0


async def _time_to_delivery(streamer, sessions_for_writer, world):
    stats = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.NOW), stats=stats)) as stream:
        pending = asyncio.ensure_future(next_batch(stream, timeout=20))
        await idle(stats)
        assert not pending.done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        written = await append(sessions_for_writer, world.a1, 1)
        batch = await pending
        return loop.time() - started, batch, written


async def test_a_commit_through_another_engine_wakes_the_stream_at_once(streamer, database_url, world):
    other = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        elapsed, batch, written = await _time_to_delivery(streamer, session_factory(other), world)
    finally:
        await other.dispose()
    assert [e.id for e in batch.events] == [written[0].id]
    assert elapsed < PROMPT_SECONDS  # poll_seconds is 30: only the notification can explain this


async def test_a_commit_from_another_process_wakes_the_stream_at_once(streamer, database_url, world):
    # The same path another replica takes: its own process, its own connection.
    script = textwrap.dedent(
        f"""
        import asyncio, uuid
        from mailwatch.domain.models import EventType, NewEvent
        from mailwatch.store import changes, create_engine, session_factory

        async def main():
            engine = create_engine({database_url!r}, pool_size=1, max_overflow=0)
            async with session_factory(engine)() as session, session.begin():
                await changes.append_events(session, uuid.UUID({str(world.tenant_a)!r}), [NewEvent(
                    mailbox_id=uuid.UUID({str(world.a1.id)!r}), email_address="a1@example.com",
                    type=EventType.MESSAGE_ADDED, message_id="from-another-process")])
            await engine.dispose()

        asyncio.run(main())
        """
    )
    stats = StreamStats()
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.NOW), stats=stats)) as stream:
        pending = asyncio.ensure_future(next_batch(stream, timeout=30))
        await idle(stats)
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await process.wait() == 0
        loop = asyncio.get_running_loop()
        committed = loop.time()
        batch = await pending
        assert loop.time() - committed < PROMPT_SECONDS
    assert batch.events[0].message_id == "from-another-process"


async def test_without_a_listener_the_stream_polls_at_the_fallback_interval(make_streamer, sessions, database_url, world):
    # Never started: not connected, so the streamer polls every fallback_poll_seconds.
    notifier = ChangeNotifier(database_url)
    streamer = make_streamer(sessions, notifier, poll_seconds=30, fallback_poll_seconds=0.3)
    elapsed, batch, _ = await _time_to_delivery(streamer, sessions, world)
    assert elapsed < PROMPT_SECONDS


async def test_without_any_notifier_the_stream_polls(make_streamer, sessions, world):
    streamer = make_streamer(sessions, None, poll_seconds=0.3)
    elapsed, batch, _ = await _time_to_delivery(streamer, sessions, world)
    assert len(batch.events) == 1 and elapsed < PROMPT_SECONDS


async def test_a_missed_notification_is_caught_by_the_poll(make_streamer, sessions, database_url, world):
    # A connected notifier that never hears our tenant (a notification lost on
    # the way): the stream still finds the event at its next poll.
    notifier = ChangeNotifier(database_url, channel="some_other_channel")
    await notifier.start(wait_connected=10)
    try:
        streamer = make_streamer(sessions, notifier, poll_seconds=0.5, fallback_poll_seconds=0.5)
        elapsed, batch, _ = await _time_to_delivery(streamer, sessions, world)
    finally:
        await notifier.stop()
    assert 0.0 < elapsed < PROMPT_SECONDS


async def test_the_notifier_reconnects_after_its_connection_is_killed(streamer, notifier, sessions, database_url, world):
    token = notifier.token(world.tenant_a)
    assert terminate_backends(database_url, "mailwatch-listen") == 1
    # It notices (the wake-all on disconnect changes every tenant's token), then comes back.
    await eventually(lambda: notifier.token(world.tenant_a) != token and notifier.connected,
                     what="the listener noticed and reconnected")
    elapsed, batch, _ = await _time_to_delivery(streamer, sessions, world)
    assert elapsed < PROMPT_SECONDS  # woken by NOTIFY again (poll_seconds is 30)


async def test_waiters_of_one_tenant_all_wake_on_one_notification(notifier, sessions, world):
    waiters = [asyncio.ensure_future(notifier.wait(world.tenant_a, 20)) for _ in range(50)]
    other = asyncio.ensure_future(notifier.wait(world.tenant_b, 1.0))
    await eventually(lambda: {world.tenant_a, world.tenant_b} <= notifier._waiters.keys())  # all are waiting
    await append(sessions, world.a1, 1)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True] * 50
    assert await other is False


async def test_a_notification_between_read_and_wait_is_not_slept_through(notifier, sessions, world):
    token = notifier.token(world.tenant_a)  # taken before "reading the log"
    await append(sessions, world.a1, 1)  # commits while the reader is busy
    await eventually(lambda: notifier.token(world.tenant_a) != token, what="the notification arrived")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Slept through, the wait would end only at its timeout, with False.
    assert await notifier.wait(world.tenant_a, 30, token=token) is True
    assert loop.time() - started < PROMPT_SECONDS
