"""The shared reader: one change-log reader per tenant per process.

Streams of a tenant that have caught up with the log subscribe to the
tenant's `TenantFeed`. The feed reads each new stretch of the log once
(unfiltered, along the (tenant_id, sequence) index) and hands the same
`FeedBatch` to every subscription; each subscription keeps its own bounded
queue and its stream applies its own filter and position. So Postgres reads
per change do not grow with the number of streams, and a commit wakes one
read, not one per stream.

Guarantees (the stream relies on them; tests pin them):

- Batches are contiguous: each covers (start, end] of the tenant's log with
  every event committed in it, and the next begins where it ended. A
  subscription sees a gap-free run of batches from where it joined.
- A subscription never slows the feed or the other subscriptions: `offer`
  never waits. When a subscription's queue would exceed `max_pending_events`
  it is dropped from the feed (`detached`): it keeps what it has queued
  (still contiguous), and its stream then reads on its own from its position,
  rejoining once it has caught up. Memory per subscription is bounded.
- A stream joins at its own position: if the feed has read past it, the
  recent batches the feed keeps (`ring_events`) fill the difference; if they
  do not reach back far enough, joining fails and the stream reads on its own
  for a while longer.
- Anything unusual (the feed's read fails, retention overtook the feed)
  detaches every subscription; each stream's own reads then see the real
  state (an error, CURSOR_EXPIRED) exactly as a lone stream would.

Waking: the feed LISTENs through the process's `ChangeNotifier` and re-reads
every poll interval, as a lone stream did.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from prometheus_client import Counter, Gauge

from mailwatch.domain.models import ChangeEvent
from mailwatch.store.changes import ScannedEvents

log = logging.getLogger(__name__)

#: How long closing a feed waits for a read in progress before cancelling it.
READ_FINISH_SECONDS = 5.0

FEEDS_OPEN = Gauge("mailwatch_stream_feeds_open", "Shared per-tenant change-log readers running in this process")
FEED_READS = Counter("mailwatch_stream_feed_reads_total", "Change-log reads made by shared per-tenant readers")
FEED_DETACHED = Counter(
    "mailwatch_stream_feed_detached_total", "Streams dropped from a shared reader (too far behind, or the reader failed)"
)


@dataclass(eq=False)
class FeedBatch:
    """Every event of the tenant's log in (start, end], ascending (possibly none).

    `item` is the stream item every stream that takes the whole batch as is
    sends (made once, by the first of them: `streams.changes`), so the streams
    of a tenant share one item and the API one conversion of it. Treat a
    batch as read-only otherwise."""

    start: int
    end: int
    events: tuple[ChangeEvent, ...]
    item: Any = None
    published: float = 0.0  # the event loop's time when the feed handed it out (one clock read for all streams)


class Subscription:
    """One stream's place on its tenant's feed: a bounded queue of batches."""

    def __init__(self, position: int, max_pending_events: int) -> None:
        self.position = position  # the stream's position when it joined; the queue continues from here
        self.max_pending_events = max_pending_events
        self.pending: collections.deque[FeedBatch] = collections.deque()
        self.pending_events = 0
        self.detached = False  # dropped from the feed: the queue ends, read on your own after it
        # The stream's wake-up while it waits (`wait_until`): a bare future, woken by
        # `offer` and `mark_detached`. Every commit wakes every caught-up stream
        # of the tenant, so this is the per-stream cost of a change: with
        # asyncio.wait_for(Event.wait()) its helper task, waiter future and
        # callbacks cost more than the stream spends on the batch.
        self._waiter: asyncio.Future[None] | None = None
        # The deadline's timer outlives a wait: a change moves the stream's next
        # heartbeat later, and the timer armed for the earlier one is kept (it
        # wakes the stream early once, which then waits again) instead of one
        # timer armed and cancelled per stream per change.
        self._timer: asyncio.TimerHandle | None = None
        self.timed_out = False  # the last wait ended at its deadline's timer
        self._feed: TenantFeed | None = None

    @property
    def ready(self) -> bool:
        """A batch is queued, or the subscription was detached (the stream has something to do)."""
        return bool(self.pending) or self.detached

    def offer(self, batch: FeedBatch) -> bool:
        """Queue a batch; False (and nothing queued) when that would exceed the bound."""
        if self.pending and self.pending_events + len(batch.events) > self.max_pending_events:
            return False
        self.pending.append(batch)
        self.pending_events += len(batch.events)
        self._wake()
        return True

    def take(self) -> FeedBatch | None:
        if not self.pending:
            return None
        batch = self.pending.popleft()
        self.pending_events -= len(batch.events)
        return batch

    async def wait_until(self, deadline: float) -> None:
        """Return when the subscription is `ready`, or at the event loop's time
        `deadline` at the latest; possibly earlier with nothing ready (a timer
        armed for an earlier deadline): `timed_out` then says so, and the
        caller checks the time and waits again."""
        self.timed_out = False
        if self.ready:
            return
        loop = asyncio.get_running_loop()
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._time_up)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _time_up(self) -> None:
        self._timer = None
        self.timed_out = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _release(self._waiter)

    def mark_detached(self) -> None:
        self.detached = True
        self._feed = None
        self._wake()

    def close(self) -> None:
        """Leave the feed (the stream ended or goes back to reading on its own)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.unsubscribe(self)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


ReadLog = Callable[[uuid.UUID, int], Awaitable[ScannedEvents]]
WaitForChange = Callable[[uuid.UUID, float, "int | None"], Awaitable[bool]]


class TenantFeed:
    """Reads one tenant's log for every subscribed stream of this process.

    `read(tenant_id, after)` is one unfiltered bounded read; `token(tenant_id)`
    and `wait(tenant_id, timeout, token)` are the notifier's; `poll_interval()`
    says how long to sleep when nothing wakes the feed.
    """

    def __init__(
        self,
        tenant_id: uuid.UUID,
        position: int,
        *,
        read: ReadLog,
        token: Callable[[uuid.UUID], "int | None"],
        wait: WaitForChange,
        poll_interval: Callable[[], float],
        ring_events: int,
        on_close: Callable[["TenantFeed"], None],
    ) -> None:
        self.tenant_id = tenant_id
        self.position = position  # read through
        self.subscriptions: set[Subscription] = set()
        self.closed = False
        self.reads = 0
        self._read, self._token, self._wait, self._poll_interval = read, token, wait, poll_interval
        self._ring: collections.deque[FeedBatch] = collections.deque()
        self._ring_events = 0
        self._ring_limit = ring_events
        self._on_close = on_close
        self._waiting = False
        self._task: asyncio.Task | None = None

    # --- joining and leaving ----------------------------------------------------

    def subscribe(self, subscription: Subscription) -> bool:
        """Join at `subscription.position`; False when the feed cannot serve from there."""
        if self.closed:
            return False
        if subscription.position < self.position:
            # The feed has read past the stream: replay what it kept, if it reaches back far enough.
            ring_start = self._ring[0].start if self._ring else self.position
            if subscription.position < ring_start:
                return False
            for batch in self._ring:
                if batch.end > subscription.position:
                    subscription.pending.append(batch)
                    subscription.pending_events += len(batch.events)
        subscription._feed = self
        self.subscriptions.add(subscription)
        if self._task is None:
            # A context of its own: the feed outlives the RPC that started it, and
            # its log records must not carry that request's id.
            self._task = asyncio.create_task(
                self._run(), name=f"stream-feed-{self.tenant_id}", context=contextvars.Context()
            )
        return True

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            self._close()
            if self._waiting and self._task is not None:
                self._task.cancel()  # only while idle: never in the middle of a read

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)

    # --- the reader loop -----------------------------------------------------------

    async def _run(self) -> None:
        FEEDS_OPEN.inc()
        try:
            while not self.closed:
                token = self._token(self.tenant_id)
                try:
                    scanned = await self._read(self.tenant_id, self.position)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - each stream's own read will surface it
                    log.warning("shared change reader for tenant %s failed (%s: %s)", self.tenant_id,
                                type(exc).__name__, exc)
                    self._detach_all()
                    return
                self.reads += 1
                FEED_READS.inc()
                if scanned.pruned_through_sequence > self.position:
                    # Retention removed events nobody here has read: let each stream
                    # find out on its own read whether that concerns it.
                    self._detach_all()
                    return
                if scanned.through_sequence > self.position:
                    self._publish(FeedBatch(self.position, scanned.through_sequence, tuple(scanned.events),
                                            published=asyncio.get_running_loop().time()))
                if not scanned.caught_up or self.closed:
                    continue  # read on, or end (closed during the read)
                self._waiting = True
                try:
                    await self._wait(self.tenant_id, self._poll_interval(), token)
                finally:
                    self._waiting = False
        except asyncio.CancelledError:
            pass
        finally:
            self._close()
            FEEDS_OPEN.dec()

    def _publish(self, batch: FeedBatch) -> None:
        self.position = batch.end
        self._ring.append(batch)
        self._ring_events += len(batch.events)
        while len(self._ring) > 1 and self._ring_events > self._ring_limit:
            self._ring_events -= len(self._ring.popleft().events)
        for subscription in list(self.subscriptions):
            if not subscription.offer(batch):
                # Too far behind: it reads on its own from its queue's end.
                self.subscriptions.discard(subscription)
                FEED_DETACHED.inc()
                subscription.mark_detached()
        if not self.subscriptions:
            self._close()

    def _detach_all(self) -> None:
        subscriptions, self.subscriptions = self.subscriptions, set()
        for subscription in subscriptions:
            FEED_DETACHED.inc()
            subscription.mark_detached()
        self._close()

    @property
    def running(self) -> bool:
        """Whether the reader task has started and not ended (it may outlive `closed`)."""
        return self._task is not None and not self._task.done()

    async def aclose(self) -> None:
        """Stop the reader (tests; process shutdown) and detach everyone."""
        self._detach_all()
        task = self._task
        if task is not None and not task.done():
            if not self._waiting:
                # Mid-read: let the read finish (the loop ends on `closed`), so its
                # pooled connection goes back to the pool instead of being left,
                # cancelled mid-statement, to the garbage collector still open.
                await asyncio.wait({task}, timeout=READ_FINISH_SECONDS)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
