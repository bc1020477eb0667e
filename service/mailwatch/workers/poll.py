"""Fallback polling: a mailbox that has been quiet for `interval` is synced anyway.

Gmail may delay or drop notifications (and drops all but one per second per
user); polling bounds how late a change can reach the change log.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

from mailwatch.clock import Clock, SystemClock
from mailwatch.config import PollSettings
from mailwatch.store import claims
from mailwatch.store.db import Sessions
from mailwatch.workers.loop import LoopWorker

log = logging.getLogger(__name__)


class PollWorker(LoopWorker):
    def __init__(
        self,
        sessions: Sessions,
        *,
        settings: PollSettings = PollSettings(),
        clock: Clock | None = None,
        loop_seconds: float | None = None,
        batch_size: int = 1000,
        on_due: Callable[[], None] | None = None,
    ) -> None:
        # Checking ten times per interval keeps the extra latency under 10%.
        super().__init__(enabled=settings.enabled,
                         loop_seconds=loop_seconds or max(0.2, settings.interval_seconds / 10))
        self.sessions = sessions
        self.interval = timedelta(seconds=settings.interval_seconds)
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.on_due = on_due

    async def run_once(self) -> int:
        marked = await claims.mark_quiet_due(
            self.sessions, now=self.clock.now(), quiet_for=self.interval, limit=self.batch_size
        )
        if marked and self.on_due:
            self.on_due()
        return marked

    async def tick(self) -> bool:
        marked = await self.run_once()
        if marked:
            log.info("quiet mailboxes marked for a fallback sync", extra={"count": marked})
        return marked >= self.batch_size
