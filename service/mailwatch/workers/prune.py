"""Retention: drop the change log's expired days, keep its next days' partitions ready,
and delete kept malformed notifications older than the configured age.

Every `loop_seconds` the worker
- creates the partitions of today and the next `days_ahead` UTC days that are
  missing (store/partitions.py), so rows land in a day of their own;
- drops every day partition whose whole day was observed before
  `now - retention` (a day is kept until its last moment expires: retention is
  between the setting and one day more), raising the tenants' watermarks;
- deletes the limits' usage buckets untouched for an hour (full, as a new one is);
- deletes the expired rows of the default partition (observed times outside
  every day partition: few) in chunks of at most `chunk_size`, each chunk its
  own short transaction. `prune_events` raises each tenant's
  `pruned_through_sequence` together with the delete.
Raised watermarks are what make old cursors fail with CURSOR_EXPIRED instead
of silently skipping.

Several replicas may run it at once: partition DDL serialises on an advisory
lock (a replica that does not get it skips), deletes of the same rows
serialise and the loser deletes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta, timezone

from prometheus_client import Counter

from mailwatch.clock import Clock, SystemClock
from mailwatch.config import PruneSettings
from mailwatch.ingest.metrics import MALFORMED_DROPPED
from mailwatch.store import changes, notifications, partitions, sealed_credentials, usage_buckets
from mailwatch.store.db import Sessions
from mailwatch.workers.loop import LoopWorker

log = logging.getLogger(__name__)

PRUNED_EVENTS = Counter("mailwatch_pruned_events_total", "Change events deleted by retention")
PARTITIONS_DROPPED = Counter("mailwatch_pruned_partitions_total", "Change-log day partitions dropped by retention")
PARTITIONS_CREATED = Counter("mailwatch_created_partitions_total", "Change-log day partitions created ahead")
PRUNE_RUNS = Counter("mailwatch_prune_runs_total", "Retention passes by outcome", ["outcome"])


# A usage bucket untouched this long is deleted (it refilled long ago; `usage_buckets.prune_idle`).
IDLE_BUCKETS_KEPT = timedelta(hours=1)


@dataclass(frozen=True)
class PruneResult:
    deleted: int  # rows deleted from the default partition
    chunks: int
    partitions_created: tuple[str, ...] = ()
    partitions_dropped: tuple[str, ...] = ()


class PruneWorker(LoopWorker):
    def __init__(
        self,
        *,
        sessions: Sessions,
        settings: PruneSettings = PruneSettings(),
        clock: Clock | None = None,
        loop_seconds: float = 300.0,
        chunk_size: int = 10_000,
        days_ahead: int = 3,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if days_ahead < 1:
            raise ValueError("days_ahead must be positive")
        super().__init__(enabled=settings.enabled, loop_seconds=loop_seconds)
        self.sessions = sessions
        self.retention = timedelta(hours=settings.retention_hours)
        self.clock = clock or SystemClock()
        self.chunk_size = chunk_size
        self.days_ahead = days_ahead

    async def tick(self) -> bool:
        try:
            await self.run_once()
        except Exception:
            PRUNE_RUNS.labels(outcome="error").inc()
            raise
        PRUNE_RUNS.labels(outcome="ok").inc()
        return False

    async def run_once(self) -> PruneResult:
        """One retention pass: partitions ahead, expired days dropped, then the default
        partition pruned chunk after chunk until nothing expired is left in it."""
        now = self.clock.now()
        older_than = now - self.retention
        created = await partitions.ensure_day_partitions(self.sessions, now.astimezone(timezone.utc).date(),
                                                         self.days_ahead + 1)
        PARTITIONS_CREATED.inc(len(created))
        dropped = await partitions.drop_expired_partitions(self.sessions, older_than)
        PARTITIONS_DROPPED.inc(len(dropped))
        for partition in dropped:
            log.info("dropped change-log partition %s (about %d events, all observed before %s)",
                     partition.name, max(partition.estimated_rows, 0), partition.upper.isoformat(),
                     extra={"partition": partition.name})
        deleted = chunks = 0
        while not self._stopping:
            count = await changes.prune_chunk(self.sessions, older_than, limit=self.chunk_size,
                                              table=partitions.DEFAULT_PARTITION)
            chunks += 1
            deleted += count
            PRUNED_EVENTS.inc(count)
            # At least `chunk_size` rows go while a full chunk was expired, so
            # fewer means this was the last one.
            if count < self.chunk_size:
                break
            await asyncio.sleep(0)  # let streams and RPCs run between chunks
        await self._prune_malformed(older_than)
        # Sealed credentials go with their last user in that user's transaction; this
        # catches one whose delete lost a race (store/sealed_credentials.sweep).
        await sealed_credentials.sweep_unused(self.sessions)
        # Limits' buckets of keys revoked or tenants gone quiet: full, so as good as absent.
        await usage_buckets.prune_idle(self.sessions, idle_for=IDLE_BUCKETS_KEPT)
        if deleted:
            log.info(
                "pruned %d change events observed before %s in %d chunks",
                deleted, older_than.isoformat(), chunks,
                extra={"pruned_events": deleted, "chunks": chunks},
            )
        return PruneResult(deleted=deleted, chunks=chunks, partitions_created=tuple(created),
                           partitions_dropped=tuple(p.name for p in dropped))

    async def _prune_malformed(self, older_than) -> int:
        """Malformed notifications kept for inspection expire like the change log."""
        deleted = 0
        while not self._stopping:
            count = await notifications.prune_malformed_chunk(self.sessions, older_than, limit=self.chunk_size)
            deleted += count
            MALFORMED_DROPPED.labels("expired").inc(count)
            if count < self.chunk_size:
                break
            await asyncio.sleep(0)
        return deleted
