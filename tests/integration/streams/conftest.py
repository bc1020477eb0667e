"""Fixtures for change-stream tests: an engine on a fresh database, two tenants
with mailboxes, a started notifier, and helpers to append and consume."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from mailwatch.database_url import libpq_url
from mailwatch.streams import StartKind, StreamQuery
from mailwatch.domain.models import EventType, Mailbox, NewEvent
from mailwatch.store import changes
from mailwatch.streams import ChangeNotifier, ChangeStreamer, EventBatch, Heartbeat, StreamStats
from tests.fixtures.factory import Rows
from tests.fixtures.waiting import eventually



@dataclass
class World:
    tenant_a: uuid.UUID
    tenant_b: uuid.UUID
    a1: Mailbox
    a2: Mailbox
    b1: Mailbox


@pytest.fixture
async def world(sessions) -> World:
    rows = Rows(sessions)
    a, b = await rows.tenant("tenant-a"), await rows.tenant("tenant-b")
    return World(
        tenant_a=a.id,
        tenant_b=b.id,
        a1=await rows.mailbox(a.id, "a1@example.com"),
        a2=await rows.mailbox(a.id, "a2@example.com"),
        b1=await rows.mailbox(b.id, "b1@example.com"),
    )


def new_events(mailbox: Mailbox, count: int, type=EventType.MESSAGE_ADDED, *, start=0, observed_at=None):
    return [
        NewEvent(
            mailbox_id=mailbox.id,
            email_address=mailbox.email_address,
            type=type,
            history_id=1000 + start + i,
            message_id=f"m{start + i}",
            thread_id=f"t{start + i}",
            label_ids=("INBOX",),
            observed_at=observed_at,
        )
        for i in range(count)
    ]


async def append(sessions, mailbox: Mailbox, count: int = 1, type=EventType.MESSAGE_ADDED, **kw):
    async with sessions() as session, session.begin():
        return await changes.append_events(session, mailbox.tenant_id, new_events(mailbox, count, type, **kw))


def query(start=StartKind.NOW, after=None, *, mailbox_ids=(), types=(), batch=500, heartbeat=30.0) -> StreamQuery:
    return StreamQuery(
        mailbox_ids=tuple(mailbox_ids),
        event_types=tuple(types),
        start=start,
        after_sequence=after,
        max_batch_size=batch,
        heartbeat_seconds=heartbeat,
    )


@pytest.fixture
async def notifier(database_url):
    notifier = ChangeNotifier(database_url, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5)
    await notifier.start(wait_connected=10)
    assert notifier.connected
    try:
        yield notifier
    finally:
        await notifier.stop()


@pytest.fixture
async def make_streamer():
    """Builds ChangeStreamers and stops their shared readers when the test ends,
    before the engine is disposed: a reader still mid-read would otherwise hold
    a pooled connection past the test, to be garbage-collected open later."""
    made: list[ChangeStreamer] = []

    def make(*args, **kwargs) -> ChangeStreamer:
        made.append(ChangeStreamer(*args, **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for streamer in made:
            await streamer.aclose()


@pytest.fixture
def streamer(make_streamer, sessions, notifier):
    return make_streamer(sessions, notifier, poll_seconds=30.0, fallback_poll_seconds=0.2)


async def idle(stats: StreamStats) -> None:
    """Until the stream (observed through `stats`) has caught up and waits on its tenant's shared reader."""
    await eventually(lambda: stats.joins >= 1, what="the stream waits on its tenant's feed")


async def next_item(stream, timeout: float = 10.0):
    """The stream's next item; fails the test after `timeout` (which ends the stream)."""
    try:
        return await asyncio.wait_for(anext(stream), timeout)
    except TimeoutError:
        pytest.fail(f"no stream item within {timeout}s")


async def next_batch(stream, timeout: float = 10.0) -> EventBatch:
    """Skip heartbeats until a batch arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        item = await next_item(stream, max(deadline - loop.time(), 0.01))
        if isinstance(item, EventBatch):
            return item
        assert isinstance(item, Heartbeat)


async def collect(stream, count: int, timeout: float = 20.0) -> list:
    """Events from batches until `count` have arrived."""
    events = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(events) < count:
        batch = await next_batch(stream, max(deadline - loop.time(), 0.01))
        events.extend(batch.events)
    return events


def terminate_backends(database_url: str, application_name: str) -> int:
    """Kill the server side of every connection of `application_name` (a lost connection); how many."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()", (application_name,)
        ).fetchall()
    return sum(1 for (done,) in killed if done)
