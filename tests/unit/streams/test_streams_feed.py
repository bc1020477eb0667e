"""The shared per-tenant reader's rules, over an in-memory log (no database)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest

from mailwatch.domain.models import ChangeEvent, EventType
from mailwatch.store.changes import ScannedEvents
from mailwatch.streams.feed import FeedBatch, Subscription, TenantFeed
from tests.fixtures.waiting import eventually

TENANT = uuid.uuid4()


class Log:
    """A tenant's log in memory, with the notifier's token/wait pair."""

    def __init__(self, read_rows: int = 100) -> None:
        self.events: list[ChangeEvent] = []
        self.pruned_through = 0
        self.read_rows = read_rows
        self.fail: Exception | None = None
        self.generation = 0
        self.changed = asyncio.Event()

    def append(self, count: int) -> list[ChangeEvent]:
        start = self.events[-1].sequence if self.events else 0
        new = [
            ChangeEvent(id=uuid.uuid4(), sequence=start + i + 1, tenant_id=TENANT, mailbox_id=uuid.uuid4(),
                        email_address="a@example.com", type=EventType.MESSAGE_ADDED,
                        observed_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
            for i in range(count)
        ]
        self.events += new
        self.generation += 1
        self.changed.set()
        return new

    async def read(self, tenant_id, after):
        await asyncio.sleep(0)  # a real read suspends here: other tasks run meanwhile
        if self.fail is not None:
            raise self.fail
        newer = [e for e in self.events if e.sequence > after][: self.read_rows]
        through = newer[-1].sequence if newer else after
        caught_up = len(newer) < self.read_rows
        return ScannedEvents(newer, through, caught_up, self.pruned_through)

    def token(self, tenant_id):
        return self.generation

    async def wait(self, tenant_id, timeout, token):
        if token != self.generation:
            return True
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def feed(self, position=0, ring_events=1000, closed=None):
        return TenantFeed(
            TENANT, position, read=self.read, token=self.token, wait=self.wait, poll_interval=lambda: 30.0,
            ring_events=ring_events, on_close=(closed.append if closed is not None else lambda feed: None),
        )


def drain(subscription):
    batches = []
    while (batch := subscription.take()) is not None:
        batches.append(batch)
    return batches


async def test_batches_are_contiguous_and_hold_every_event():
    log = Log(read_rows=3)
    feed = log.feed()
    subscription = Subscription(0, 1000)
    assert feed.subscribe(subscription)
    written = log.append(7) + log.append(1)
    await eventually(lambda: feed.position == 8)
    batches = drain(subscription)
    assert [(b.start, b.end) for b in batches][0][0] == 0
    assert all(a.end == b.start for a, b in zip(batches, batches[1:]))
    assert [e.sequence for b in batches for e in b.events] == [e.sequence for e in written]
    subscription.close()


async def test_a_full_queue_detaches_only_that_subscription():
    log = Log()
    feed = log.feed()
    slow, fast = Subscription(0, 5), Subscription(0, 5)
    assert feed.subscribe(slow) and feed.subscribe(fast)
    for _ in range(4):
        log.append(2)
        await eventually(lambda: fast.pending_events == 2)
        drain(fast)
    assert slow.detached and slow not in feed.subscriptions
    assert slow.pending_events <= 5 and slow.ready
    # What it kept is contiguous from where it joined.
    kept = drain(slow)
    assert kept[0].start == 0 and all(a.end == b.start for a, b in zip(kept, kept[1:]))
    assert not fast.detached and fast in feed.subscriptions
    fast.close()


async def test_joining_behind_the_feed_replays_its_recent_batches_or_refuses():
    log = Log()
    feed = log.feed(ring_events=4)
    first = Subscription(0, 100)
    feed.subscribe(first)
    for _ in range(3):
        log.append(2)
        await eventually(lambda: first.pending_events == 2)
        drain(first)
    assert feed.position == 6
    late = Subscription(3, 100)  # inside the last two batches (kept: 4 events)
    assert feed.subscribe(late)
    assert [(b.start, b.end) for b in drain(late)] == [(2, 4), (4, 6)]  # the stream skips what it has
    too_late = Subscription(1, 100)
    assert not feed.subscribe(too_late) and too_late not in feed.subscriptions
    ahead = Subscription(6, 100)
    assert feed.subscribe(ahead) and drain(ahead) == []
    for s in (first, late, ahead):
        s.close()


@pytest.mark.parametrize("trouble", ["read fails", "retention overtook the feed"])
async def test_trouble_detaches_everyone_and_closes_the_feed(trouble):
    log = Log()
    closed = []
    feed = log.feed(closed=closed)
    subscriptions = [Subscription(0, 100) for _ in range(3)]
    for s in subscriptions:
        feed.subscribe(s)
    await eventually(lambda: feed.reads == 1)
    if trouble == "read fails":
        log.fail = OSError("connection lost")
    else:
        log.append(5)
        log.pruned_through = 3
        log.events = log.events[3:]
    log.changed.set()
    log.generation += 1
    await eventually(lambda: feed.closed)
    assert all(s.detached and s.ready for s in subscriptions)
    assert closed == [feed] and not feed.subscriptions
    assert all(drain(s) == [] for s in subscriptions)  # nothing read past the trouble


async def test_the_feed_stops_when_its_last_subscription_leaves():
    log = Log()
    closed = []
    feed = log.feed(closed=closed)
    a, b = Subscription(0, 100), Subscription(0, 100)
    feed.subscribe(a)
    feed.subscribe(b)
    await eventually(lambda: feed.reads == 1)
    a.close()
    assert not feed.closed
    b.close()
    assert feed.closed and closed == [feed]
    await eventually(lambda: feed._task.done())
    assert not feed.subscribe(Subscription(0, 100))  # a closed feed takes nobody: the streamer starts a new one


async def test_a_waiting_subscription_wakes_for_a_batch_and_for_being_detached():
    log = Log()
    feed = log.feed()
    subscription = Subscription(0, 100)
    feed.subscribe(subscription)
    await eventually(lambda: feed.reads == 1)
    waiting = asyncio.ensure_future(subscription.wait_until(asyncio.get_running_loop().time() + 60.0))
    await eventually(lambda: subscription._waiter is not None)  # it waits
    log.append(2)
    await asyncio.wait_for(waiting, 10)  # woken by the batch, long before the timeout
    assert subscription.ready and [len(b.events) for b in drain(subscription)] == [2]
    assert not subscription.ready
    waiting = asyncio.ensure_future(subscription.wait_until(asyncio.get_running_loop().time() + 60.0))
    await eventually(lambda: subscription._waiter is not None)
    await feed.aclose()
    await asyncio.wait_for(waiting, 10)  # woken by being detached
    assert subscription.detached and subscription.ready


async def test_a_waiting_subscription_returns_at_its_deadline_and_cancels_cleanly():
    subscription = Subscription(0, 100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await subscription.wait_until(started + 0.05)
    assert loop.time() - started >= 0.04 and not subscription.ready and subscription.timed_out
    waiting = asyncio.ensure_future(subscription.wait_until(asyncio.get_running_loop().time() + 60.0))
    await eventually(lambda: subscription._waiter is not None)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # A batch offered after the waiter left is simply queued for the next take.
    assert subscription.offer(FeedBatch(0, 1, ()))
    assert subscription.ready
    await asyncio.wait_for(subscription.wait_until(asyncio.get_running_loop().time() + 60.0), 10)  # ready: returns at once


async def test_a_later_deadline_keeps_the_armed_timer_which_wakes_the_stream_early_once():
    """A change moves a stream's next heartbeat later: the timer armed for the earlier
    deadline stays (no timer per change); it wakes the waiter at its own time, marked
    timed out, and the next wait arms one for the later deadline."""
    subscription = Subscription(0, 100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.ensure_future(subscription.wait_until(started + 0.1))
    await eventually(lambda: subscription._waiter is not None)
    assert subscription.offer(FeedBatch(0, 1, ()))  # a change: woken at once, not timed out
    await asyncio.wait_for(waiting, 10)
    assert not subscription.timed_out and subscription.take() is not None
    armed = subscription._timer
    await subscription.wait_until(started + 60.0)  # later deadline: the earlier timer ends this wait
    assert subscription._timer is None and armed is not None and armed.when() == started + 0.1
    assert subscription.timed_out and loop.time() - started >= 0.09
    waiting = asyncio.ensure_future(subscription.wait_until(started + 60.0))
    await eventually(lambda: subscription._waiter is not None)
    assert subscription._timer is not None and subscription._timer.when() == started + 60.0
    subscription.close()  # leaving cancels the timer
    assert subscription._timer is None
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
