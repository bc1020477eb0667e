"""Retention: delete change-log rows (and kept malformed notifications) older than the configured age.

Every `loop_seconds` the worker cuts events observed before `now - retention`
in chunks of at most `chunk_size` expired rows, each chunk its own short
transaction, so a large backlog (first run, or after an outage) never holds
one giant transaction or long row locks. `prune_events` raises each tenant's
`pruned_through_sequence` together with the delete, which is what makes old
cursors fail with CURSOR_EXPIRED instead of silently skipping.

Several replicas may run it at once: deletes of the same rows serialise and
the loser deletes nothing, so no coordination is needed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from mailwatch.clock import Clock, SystemClock
from mailwatch.config import PruneSettings
from mailwatch.ingest.metrics import MALFORMED_DROPPED
from mailwatch.store import changes, notifications
from mailwatch.store.db import Sessions
from mailwatch.workers.loop import LoopWorker

log = logging.getLogger(__name__)

PRUNED_EVENTS = Counter("mailwatch_pruned_events_total", "Change events deleted by retention")
PRUNE_RUNS = Counter("mailwatch_prune_runs_total", "Retention passes by outcome", ["outcome"])


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    chunks: int


class PruneWorker(LoopWorker):
    def __init__(
        self,
        *,
        sessions: Sessions,
        settings: PruneSettings = PruneSettings(),
        clock: Clock | None = None,
        loop_seconds: float = 300.0,
        chunk_size: int = 10_000,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        super().__init__(enabled=settings.enabled, loop_seconds=loop_seconds)
        self.sessions = sessions
        self.retention = timedelta(hours=settings.retention_hours)
        self.clock = clock or SystemClock()
        self.chunk_size = chunk_size

    async def tick(self) -> bool:
        try:
            await self.run_once()
        except Exception:
            PRUNE_RUNS.labels(outcome="error").inc()
            raise
        PRUNE_RUNS.labels(outcome="ok").inc()
        return False

    async def run_once(self) -> PruneResult:
        """One retention pass: prune chunk after chunk until nothing expired is left."""
        older_than = self.clock.now() - self.retention
        deleted = chunks = 0
        while not self._stopping:
            count = await changes.prune_chunk(self.sessions, older_than, limit=self.chunk_size)
            chunks += 1
            deleted += count
            PRUNED_EVENTS.inc(count)
            # At least `chunk_size` rows go while a full chunk was expired, so
            # fewer means this was the last one.
            if count < self.chunk_size:
                break
            await asyncio.sleep(0)  # let streams and RPCs run between chunks
        await self._prune_malformed(older_than)
        if deleted:
            log.info(
                "pruned %d change events observed before %s in %d chunks",
                deleted, older_than.isoformat(), chunks,
                extra={"pruned_events": deleted, "chunks": chunks},
            )
        return PruneResult(deleted=deleted, chunks=chunks)

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
