"""Change streams: a tenant's change log from a start position, live.

`ChangeStreamer.stream(tenant_id, query)` is an async generator of
`EventBatch` (up to `query.max_batch_size` matching events, in commit order)
and `Heartbeat` (first, at the start position, then whenever nothing was sent
for `query.heartbeat_seconds`). Both
carry `position`: the sequence the stream has scanned through, so a client
that resumes from a heartbeat's cursor neither misses nor repeats anything,
even when filters made it skip rows.

Start positions:

- cursor → after that sequence. A cursor *below* the tenant's
  `pruned_through_sequence` raises `CursorExpired` (metadata `earliest_cursor`:
  resume from it to read everything still retained). A cursor *equal* to the
  watermark is still good: everything after it is retained (this is what a
  START_EARLIEST stream's first heartbeat hands out). A cursor beyond the
  tenant's latest sequence raises `InvalidCursor`: every cursor we hand out is
  at or below the tenant's latest sequence, and since sequences are global a
  foreign cursor treated as "now" could silently skip the tenant's next events.
- START_NOW → after the tenant's latest sequence when the stream opens.
- START_EARLIEST → after `pruned_through_sequence` (the oldest retained event).

Mailbox filters are checked at open: an id that is not one of the tenant's
mailboxes raises `NotFound` (another tenant's mailbox looks exactly like a
missing one). Reads are scoped by tenant anyway, so nothing could leak.

Reading: one bounded `store.changes.scan_events` per step (one statement:
walk at most `scan_rows` rows along the (tenant_id, sequence) index, filter in
SQL, return the matches plus how far it looked). Unfiltered streams scan
exactly `max_batch_size` rows. A batch is read only when the consumer asks for
the next item, so a slow consumer holds at most one batch in this generator;
under grpc.aio the handler's `await context.write()` holds the generator until
the transport accepts the previous message.

A stream that falls behind retention (prune raised the watermark above its
position) raises `CursorExpired` instead of silently skipping: the watermark is
read in the same snapshot as the events.

Waking: `ChangeNotifier` (LISTEN/NOTIFY) wakes idle streams promptly; the
streamer also re-reads every `poll_seconds` (every `fallback_poll_seconds`
while the notifier is not connected), so a lost notification costs latency only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailwatch.clock import Clock, SystemClock
from mailwatch.domain.errors import CursorExpired, InvalidCursor
from mailwatch.domain.models import ChangeEvent
from mailwatch.store import changes as change_log
from mailwatch.store import mailboxes as mailbox_store
from mailwatch.store import tenants as tenant_store
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

    def record_read(self, count: int) -> None:
        self.reads += 1
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
    """Opens change streams. One per process, shared by all streams."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: ChangeNotifier | None,
        *,
        clock: Clock | None = None,
        poll_seconds: float = 5.0,
        fallback_poll_seconds: float = 1.0,
        scan_rows: int = 5000,
    ) -> None:
        self.sessions = sessions
        self.notifier = notifier
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self.fallback_poll_seconds = fallback_poll_seconds
        # Rows one filtered read may walk: bounds a statement's work when a
        # selective filter meets a long stretch of other mailboxes' events.
        self.scan_rows = scan_rows

    async def open_position(self, tenant_id: uuid.UUID, query: StreamQuery) -> int:
        """Check the query against the tenant's data and return the start position.

        Raises NotFound (a mailbox id that is not the tenant's), InvalidCursor,
        CursorExpired. `stream` calls it first; call it yourself to fail the RPC
        before sending anything (the errors surface on the first iteration anyway).
        """
        async with self.sessions() as session:
            for mailbox_id in query.mailbox_ids:
                await mailbox_store.get_mailbox(session, tenant_id, mailbox_id)  # NotFound if not ours
            tenant = await tenant_store.get_tenant(session, tenant_id)
            latest = await change_log.latest_sequence(session, tenant_id)
        return resolve_start(query, latest=latest, pruned_through=tenant.pruned_through_sequence)

    async def stream(
        self,
        tenant_id: uuid.UUID,
        query: StreamQuery,
        *,
        start_position: int | None = None,
        stats: StreamStats | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Yield EventBatch / Heartbeat items forever (until the consumer stops iterating).

        `start_position` is what `open_position` returned (if the caller already
        called it); otherwise the stream resolves it itself.
        """
        stats = stats if stats is not None else StreamStats()
        position = start_position if start_position is not None else await self.open_position(tenant_id, query)
        stats.start_position = stats.position = position
        loop = asyncio.get_running_loop()
        heartbeat_seconds = query.heartbeat_seconds
        last_sent = loop.time()
        STREAMS_OPEN.inc()
        try:
            # The opening heartbeat hands the consumer its start position at once:
            # a START_NOW consumer cut off before any event still resumes without a gap.
            yield self._heartbeat(position, stats)
            last_sent = loop.time()
            while True:
                token = self.notifier.token(tenant_id) if self.notifier is not None else None
                scanned = await self._scan(tenant_id, position, query, stats)
                position = stats.position = scanned.through_sequence
                if scanned.events:
                    batch = EventBatch(tuple(scanned.events), position)
                    stats.batches += 1
                    STREAM_EVENTS.inc(len(batch.events))
                    yield batch
                    # Resumed: the consumer took the batch and wants the next item.
                    stats.events_yielded += len(batch.events)
                    last_sent = loop.time()
                if not scanned.caught_up:
                    # Catching up: read on, but keep heartbeats flowing while a
                    # filter skips a long stretch without a match.
                    if loop.time() - last_sent >= heartbeat_seconds:
                        yield self._heartbeat(position, stats)
                        last_sent = loop.time()
                    continue
                # Caught up: sleep until woken or the poll timer fires, with
                # heartbeats whenever nothing was sent for heartbeat_seconds.
                poll_deadline = loop.time() + self._poll_interval()
                while (now := loop.time()) < poll_deadline:
                    heartbeat_due = last_sent + heartbeat_seconds
                    if now >= heartbeat_due:
                        yield self._heartbeat(position, stats)
                        last_sent = loop.time()
                        continue
                    if await self._wait(tenant_id, min(poll_deadline, heartbeat_due) - now, token):
                        break
        finally:
            STREAMS_OPEN.dec()

    def _poll_interval(self) -> float:
        if self.notifier is not None and self.notifier.connected:
            return self.poll_seconds
        return min(self.poll_seconds, self.fallback_poll_seconds)

    async def _wait(self, tenant_id: uuid.UUID, timeout: float, token: int | None) -> bool:
        if self.notifier is None:
            await asyncio.sleep(timeout)
            return False
        return await self.notifier.wait(tenant_id, timeout, token=token)

    def _heartbeat(self, position: int, stats: StreamStats) -> Heartbeat:
        stats.heartbeats += 1
        STREAM_HEARTBEATS.inc()
        return Heartbeat(server_time=self.clock.now(), position=position)

    async def _scan(
        self, tenant_id: uuid.UUID, position: int, query: StreamQuery, stats: StreamStats
    ) -> change_log.ScannedEvents:
        filtered = bool(query.mailbox_ids or query.event_types)
        async with self.sessions() as session:
            scanned = await change_log.scan_events(
                session,
                tenant_id,
                position,
                mailbox_ids=query.mailbox_ids,
                types=query.event_types,
                limit=query.max_batch_size,
                scan_limit=max(self.scan_rows, query.max_batch_size) if filtered else query.max_batch_size,
            )
        STREAM_READS.inc()
        stats.record_read(len(scanned.events))
        if scanned.pruned_through_sequence > position:
            # Retention removed events this stream had not read yet.
            raise cursor_expired(scanned.pruned_through_sequence)
        return scanned
