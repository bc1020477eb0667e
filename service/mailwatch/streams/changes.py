"""Change streams: a tenant's change log from a start position, live.

`ChangeStreamer.stream(tenant_id, query)` is an async generator of
`EventBatch` (up to `query.max_batch_size` matching events, in commit order)
and `Heartbeat` (first, at the start position, then whenever nothing was sent
for `query.heartbeat_seconds`). Both carry `position`: the sequence the stream has scanned through, so a client
that resumes from a heartbeat's cursor neither misses nor repeats anything,
even when filters made it skip rows.

Start positions:

- cursor → after that sequence. A cursor *below* the tenant's
  `pruned_through_sequence` raises `CursorExpired` (carrying the watermark:
  resuming right after it reads everything still retained; the API hands it
  out as `earliest_cursor`). A cursor *equal* to the watermark is still good
  (this is what a START_EARLIEST stream's first heartbeat hands out). A cursor
  beyond the tenant's latest sequence raises `InvalidCursor`: every cursor we
  hand out is at or below the tenant's latest sequence, and since sequences
  are global a foreign cursor treated as "now" could silently skip the
  tenant's next events.
- START_NOW → after the tenant's latest sequence when the stream opens.
- START_EARLIEST → after `pruned_through_sequence` (the oldest retained event).

Mailbox filters are checked at open: an id that is not one of the tenant's
mailboxes raises `NotFound` (another tenant's mailbox looks exactly like a
missing one). Reads are scoped by tenant anyway, so nothing could leak.

Reading has two modes, one method each; `stream` alternates between them:

- **On its own** (`_read_alone`) while catching up (a backlog, a resume from an old cursor):
  one bounded `store.changes.scan_events` per step (one statement: walk at
  most `scan_rows` rows along the (tenant_id, sequence) index, filter in SQL,
  return the matches plus how far it looked). Unfiltered streams scan exactly
  `max_batch_size` rows. A batch is read only when the consumer asks for the
  next item, so a slow consumer holds at most one batch in this generator;
  under grpc.aio the handler's `await context.write()` holds the generator
  until the transport accepts the previous message.
- **Shared** (the loop in `stream`) once a read finds it caught up: the stream joins its tenant's
  `TenantFeed` (`streams.feed`), which reads each new stretch of the log once
  for every caught-up stream of the tenant in this process; the stream
  filters the shared batches itself. A stream whose consumer lets more than
  `max_pending_events` queue up is dropped from the feed and reads on its own
  again from where its queue ended, so it never slows the others and its
  memory stays bounded. Either way the stream delivers exactly the events
  after its position, in sequence order, once.

A stream that falls behind retention (prune raised the watermark above its
position) raises `CursorExpired` instead of silently skipping: the watermark is
read in the same snapshot as the events.

Waking: `ChangeNotifier` (LISTEN/NOTIFY) wakes the tenant's feed promptly; the
feed also re-reads every `poll_seconds` (every `fallback_poll_seconds` while
the notifier is not connected), so a lost notification costs latency only.

Where the time goes (figures in docs/performance.md):

- A backlog (one stream, batches of 1,000): per event, reading the row
  (`store.changes.scan_events`, binary tuples), the domain event, the
  ChangeEvent message built inside its response (`api.convert`) and gRPC's
  serialisation and write. Reading the next batch while the current one is
  written (prefetch) is not done: Postgres' own share of a read is small
  beside this process's CPU per batch, and prefetching would double what a
  slow consumer holds in memory.
- Fan-out (one commit, 1,000 caught-up streams of a tenant): one shared read,
  then per stream a wake-up (`Subscription.wait_until`, a bare future; its
  heartbeat timer is not re-armed per change), the feed batch's one item
  taken as is when the stream has no filter (its response converted once for
  all), one generator step to the servicer, which writes it (`context.write`),
  and gRPC's write, which is most of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Callable

from prometheus_client import Counter, Gauge

from mailwatch.clock import Clock, SystemClock
from mailwatch.config import StreamSettings
from mailwatch.domain.errors import CursorExpired, InvalidCursor
from mailwatch.domain.models import ChangeEvent
from mailwatch.store import changes as change_log
from mailwatch.store.db import Sessions
from mailwatch.streams.feed import FeedBatch, Subscription, TenantFeed
from mailwatch.streams.notifier import ChangeNotifier
from mailwatch.streams.query import StartKind, StreamQuery

log = logging.getLogger(__name__)

STREAMS_OPEN = Gauge("mailwatch_streams_open", "Change streams currently open in this process")
STREAM_EVENTS = Counter("mailwatch_stream_events_total", "Change events sent on streams")
STREAM_HEARTBEATS = Counter("mailwatch_stream_heartbeats_total", "Heartbeats sent on streams")
STREAM_READS = Counter("mailwatch_stream_reads_total", "Change-log reads made by streams")
STREAMS_EXPIRED = Counter("mailwatch_streams_expired_total", "Streams refused or ended with CURSOR_EXPIRED")


@dataclass(frozen=True)
class EventBatch:
    events: tuple[ChangeEvent, ...]  # 1..max_batch_size, ascending sequence
    position: int  # scanned through: >= events[-1].sequence (greater when filters skipped rows)
    # From the tenant's shared reader: other streams of the tenant send the same
    # events now (worth converting once for all); False for a stream's own read.
    shared: bool = False
    # The consumer's own use: streams that take a feed batch whole send this one
    # object, so a conversion kept here (`api.convert.stream_responses`) is made once.
    memo: dict = dataclasses.field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Heartbeat:
    server_time: datetime
    position: int  # the stream's position: a cursor for it resumes exactly here


StreamItem = EventBatch | Heartbeat


@dataclass
class StreamStats:
    """Counters of one stream (pass one to `stream` to observe it; tests, debugging)."""

    reads: int = 0  # scan_events calls
    events_read: int = 0  # matching events returned by those reads
    events_yielded: int = 0  # events the consumer has taken (counted when it asks for more)
    batches: int = 0  # batches handed out
    heartbeats: int = 0
    start_position: int | None = None
    position: int | None = None
    max_read_ahead: int = 0  # most events read but not yet taken by the consumer, ever
    joins: int = 0  # times the stream joined its tenant's shared reader
    shared_batches: int = 0  # batches taken from the shared reader's queue
    max_queued: int = 0  # most events ever waiting in the stream's queue on the shared reader

    def record_read(self, count: int) -> None:
        self.reads += 1
        self._record(count)

    def record_shared(self, count: int) -> None:
        self.shared_batches += 1
        self._record(count)

    def _record(self, count: int) -> None:
        self.events_read += count
        ahead = self.events_read - self.events_yielded
        self.max_read_ahead = max(self.max_read_ahead, ahead)


def cursor_expired(pruned_through: int) -> CursorExpired:
    STREAMS_EXPIRED.inc()
    return CursorExpired(
        "the cursor points before the oldest retained change; resync, then resume from earliest_cursor",
        pruned_through_sequence=pruned_through,
    )


def resolve_start(query: StreamQuery, *, latest: int, pruned_through: int) -> int:
    """The sequence a stream starts after (pure: validated against the tenant's log bounds)."""
    if query.start == StartKind.EARLIEST:
        return pruned_through
    if query.start == StartKind.CURSOR:
        after = query.after_sequence
        if after is None:
            raise ValueError("a CURSOR start needs after_sequence")
        if after > latest:
            raise InvalidCursor("cursor is not a position in this tenant's change log")
        if after < pruned_through:
            raise cursor_expired(pruned_through)
        return after
    return latest


class ChangeStreamer:
    """Opens change streams. One per process, shared by all streams; it also
    owns the process's shared per-tenant readers (`streams.feed`)."""

    @classmethod
    def from_settings(
        cls, settings: StreamSettings, sessions: Sessions, notifier: ChangeNotifier | None,
        *, clock: Clock | None = None,
    ) -> "ChangeStreamer":
        """Built from its settings section (the rest of the constructor's knobs are for tests)."""
        return cls(sessions, notifier, clock=clock, poll_seconds=settings.poll_seconds)

    def __init__(
        self,
        sessions: Sessions,
        notifier: ChangeNotifier | None,
        *,
        clock: Clock | None = None,
        poll_seconds: float = 5.0,
        fallback_poll_seconds: float = 1.0,
        scan_rows: int = 5000,
        feed_read_rows: int = 1000,
        max_pending_events: int = 10_000,
    ) -> None:
        self.sessions = sessions
        self.notifier = notifier
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self.fallback_poll_seconds = fallback_poll_seconds
        # Rows one filtered read may walk: bounds a statement's work when a
        # selective filter meets a long stretch of other mailboxes' events.
        self.scan_rows = scan_rows
        # Rows one shared read takes (a burst larger than this is read in steps).
        self.feed_read_rows = feed_read_rows
        # Events one stream may have queued from its tenant's feed before it is
        # dropped to reading on its own; also how far back a joining stream is
        # served from the feed's recent batches.
        self.max_pending_events = max_pending_events
        self._feeds: dict[uuid.UUID, TenantFeed] = {}
        # Every feed started, until its reader task has ended: a feed closed while
        # it was mid-read finishes that read on its own, and shutdown must wait
        # for it (or it would hold a database connection past the engine's end).
        self._running_feeds: set[TenantFeed] = set()

    def feed(self, tenant_id: uuid.UUID) -> TenantFeed | None:
        """The tenant's running shared reader, if any (tests, metrics)."""
        return self._feeds.get(tenant_id)

    async def open_position(self, tenant_id: uuid.UUID, query: StreamQuery) -> int:
        """Check the query against the tenant's data and return the start position.

        Raises NotFound (a mailbox id that is not the tenant's), InvalidCursor,
        CursorExpired. `stream` calls it first; call it yourself to fail the RPC
        before sending anything (the errors surface on the first iteration anyway).
        """
        pruned_through, latest = await change_log.stream_bounds(self.sessions, tenant_id, query.mailbox_ids)
        return resolve_start(query, latest=latest, pruned_through=pruned_through)

    async def stream(
        self,
        tenant_id: uuid.UUID,
        query: StreamQuery,
        *,
        start_position: int | None = None,
        stats: StreamStats | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Yield a Heartbeat at the start position, then EventBatch / Heartbeat
        items forever (until the consumer stops iterating).

        `start_position` is what `open_position` returned (if the caller already
        called it); otherwise the stream resolves it itself.

        The stream reads on its own while it catches up; once a read finds
        nothing more, it joins its tenant's feed and takes batches from its
        queue; dropped from the feed (too slow), it reads on its own again.
        """
        tracked = stats if stats is not None else StreamStats()
        position = start_position if start_position is not None else await self.open_position(tenant_id, query)
        tracked.start_position = tracked.position = position
        loop = asyncio.get_running_loop()
        progress = _Progress(position, loop.time())
        STREAMS_OPEN.inc()
        try:
            # The opening heartbeat hands the consumer its start position at once:
            # a START_NOW consumer cut off before any event still resumes without a gap.
            yield self._heartbeat(position, tracked)
            progress.sent()
            while True:
                async with contextlib.aclosing(self._read_alone(tenant_id, query, progress, tracked)) as items:
                    async for item in items:
                        yield item
                subscription = self._join(tenant_id, progress.position, tracked)
                if subscription is None:
                    continue
                # Following the feed. Inline, not a generator of its own: this loop runs
                # once per change for every caught-up stream of the tenant, so it keeps
                # to one generator step per item, no clock read but the feed's (a sent
                # batch counts as sent when the feed handed it out), no timer per
                # change (`Subscription.wait_until`), and the stats only when the
                # caller asked for them.
                try:
                    heartbeat_seconds = query.heartbeat_seconds
                    size = query.max_batch_size
                    matches = _matcher(query)
                    while True:
                        shared = subscription.take()
                        if shared is None:
                            if subscription.detached:
                                break  # its queue is drained: read on from its end
                            heartbeat_due = progress.last_sent + heartbeat_seconds
                            if subscription.timed_out and loop.time() >= heartbeat_due:
                                yield self._heartbeat(progress.position, tracked)
                                progress.sent()
                                continue
                            await subscription.wait_until(heartbeat_due)
                            continue
                        if stats is not None:
                            stats.max_queued = max(stats.max_queued, subscription.pending_events + len(shared.events))
                        position = progress.position
                        if shared.end <= position:
                            continue  # joined behind the feed: already seen
                        if shared.start > position:
                            # Never expected (the queue is contiguous from where the stream
                            # joined); reading on its own from its position is always correct.
                            log.warning("stream queue out of step (%d > %d); reading on its own",
                                        shared.start, position)
                            break
                        if matches is None and shared.start == position and 0 < len(shared.events) <= size:
                            # The usual case: the whole batch, as one item every such stream shares.
                            item = shared.item
                            if item is None:
                                item = shared.item = EventBatch(shared.events, shared.end, shared=True)
                            progress.position = shared.end
                            STREAM_EVENTS.inc(len(item.events))
                            if stats is not None:
                                stats.position = shared.end
                                stats.batches += 1
                                stats.record_shared(len(item.events))
                            yield item
                            progress.sent_at(shared.published)
                            if stats is not None:
                                stats.events_yielded += len(item.events)
                            continue
                        for batch in self._cut(shared, position, matches, size, stats):
                            progress.position = tracked.position = batch.position
                            yield batch
                            progress.sent_at(shared.published)
                            tracked.events_yielded += len(batch.events)
                        progress.position = tracked.position = shared.end
                finally:
                    subscription.close()
        finally:
            STREAMS_OPEN.dec()

    async def _read_alone(
        self, tenant_id: uuid.UUID, query: StreamQuery, progress: _Progress, stats: StreamStats
    ) -> AsyncIterator[StreamItem]:
        """Catching up: bounded reads of its own from the stream's position, until one finds nothing more."""
        while True:
            scanned = await self._scan(tenant_id, progress.position, query, stats)
            progress.position = stats.position = scanned.through_sequence
            if scanned.events:
                batch = self._batch(tuple(scanned.events), progress.position, stats)
                yield batch
                stats.events_yielded += len(batch.events)  # the consumer took it and asks for more
                progress.sent()
            if scanned.caught_up:
                return
            if progress.since_sent() >= query.heartbeat_seconds:
                # Keep heartbeats flowing while a filter skips a long stretch without a match.
                yield self._heartbeat(progress.position, stats)
                progress.sent()

    def _cut(self, shared: FeedBatch, position: int, matches: Callable[[ChangeEvent], bool] | None, size: int,
             stats: StreamStats | None) -> list[EventBatch]:
        """A stream's part of a feed batch: its events after `position` that pass its filter, in
        items of at most `size` events (the last one reaching the batch's end); possibly none."""
        wanted = [e for e in shared.events if e.sequence > position and (matches is None or matches(e))]
        if stats is not None:
            stats.record_shared(len(wanted))
        batches = []
        for offset in range(0, len(wanted), size):
            chunk = tuple(wanted[offset : offset + size])
            last_chunk = offset + size >= len(wanted)
            batches.append(self._batch(chunk, shared.end if last_chunk else chunk[-1].sequence, stats, shared=True))
        return batches

    # --- the shared readers ----------------------------------------------------------

    def _join(self, tenant_id: uuid.UUID, position: int, stats: StreamStats) -> Subscription | None:
        """Join the tenant's feed at `position` (starting one if none runs); None if it cannot serve from there."""
        subscription = Subscription(position, self.max_pending_events)
        feed = self._feeds.get(tenant_id)
        if feed is None or feed.closed:
            feed = self._feeds[tenant_id] = TenantFeed(
                tenant_id,
                position,
                read=self._read_all,
                token=self._token,
                wait=self._wait,
                poll_interval=self._poll_interval,
                ring_events=self.max_pending_events,
                on_close=self._feed_closed,
            )
            self._running_feeds = {f for f in self._running_feeds if f.running or not f.closed}
            self._running_feeds.add(feed)
        if not feed.subscribe(subscription):
            return None
        stats.joins += 1
        return subscription

    async def aclose(self) -> None:
        """Stop every shared reader, including closed ones still finishing a read (shutdown)."""
        feeds, self._running_feeds = list(self._running_feeds), set()
        await asyncio.gather(*(feed.aclose() for feed in feeds), return_exceptions=True)

    def _feed_closed(self, feed: TenantFeed) -> None:
        if self._feeds.get(feed.tenant_id) is feed:
            del self._feeds[feed.tenant_id]

    async def _read_all(self, tenant_id: uuid.UUID, position: int) -> change_log.ScannedEvents:
        """One unfiltered read for a feed: every event after `position`, up to feed_read_rows."""
        return await change_log.scan(
            self.sessions, tenant_id, position, limit=self.feed_read_rows, scan_limit=self.feed_read_rows
        )

    def _token(self, tenant_id: uuid.UUID) -> int | None:
        return self.notifier.token(tenant_id) if self.notifier is not None else None

    def _poll_interval(self) -> float:
        if self.notifier is not None and self.notifier.connected:
            return self.poll_seconds
        return min(self.poll_seconds, self.fallback_poll_seconds)

    async def _wait(self, tenant_id: uuid.UUID, timeout: float, token: int | None) -> bool:
        if self.notifier is None:
            await asyncio.sleep(timeout)
            return False
        return await self.notifier.wait(tenant_id, timeout, token=token)

    # --- items -------------------------------------------------------------------------

    def _batch(self, events: tuple[ChangeEvent, ...], position: int, stats: StreamStats | None, *,
               shared: bool = False) -> EventBatch:
        if stats is not None:
            stats.batches += 1
        STREAM_EVENTS.inc(len(events))
        return EventBatch(events, position, shared)

    def _heartbeat(self, position: int, stats: StreamStats) -> Heartbeat:
        stats.heartbeats += 1
        STREAM_HEARTBEATS.inc()
        return Heartbeat(server_time=self.clock.now(), position=position)

    async def _scan(
        self, tenant_id: uuid.UUID, position: int, query: StreamQuery, stats: StreamStats
    ) -> change_log.ScannedEvents:
        scanned = await change_log.scan(
            self.sessions,
            tenant_id,
            position,
            mailbox_ids=query.mailbox_ids,
            types=query.event_types,
            partition=query.partition,
            limit=query.max_batch_size,
            scan_limit=max(self.scan_rows, query.max_batch_size) if query.filtered else query.max_batch_size,
        )
        STREAM_READS.inc()
        stats.record_read(len(scanned.events))
        if scanned.pruned_through_sequence > position:
            # Retention removed events this stream had not read yet.
            raise cursor_expired(scanned.pruned_through_sequence)
        return scanned


@dataclass
class _Progress:
    """Where a stream is and when it last sent something, carried across its two modes."""

    position: int
    last_sent: float

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def sent(self) -> None:
        self.last_sent = self.now()

    def sent_at(self, when: float) -> None:
        """Something was sent, as of `when` (a shared batch: when the feed handed it out)."""
        if when > self.last_sent:
            self.last_sent = when

    def since_sent(self) -> float:
        return self.now() - self.last_sent


def _matcher(query: StreamQuery) -> Callable[[ChangeEvent], bool] | None:
    """The stream's filter, applied to the feed's unfiltered batches (the same test
    `scan_events` makes in SQL); None when the stream takes every event."""
    mailbox_ids = frozenset(query.mailbox_ids)
    types = frozenset(query.event_types)
    if query.partition is not None:
        partition = query.partition
        rest = _matcher(dataclasses.replace(query, partition=None))
        if rest is None:
            return lambda event: partition.holds(event.mailbox_id)
        return lambda event: partition.holds(event.mailbox_id) and rest(event)
    if mailbox_ids and types:
        return lambda event: event.mailbox_id in mailbox_ids and event.type in types
    if mailbox_ids:
        return lambda event: event.mailbox_id in mailbox_ids
    if types:
        return lambda event: event.type in types
    return None
