"""When to try a failed mailbox again: exponential backoff with full jitter,
never sooner than Gmail's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BackoffPolicy:
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def delay(self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        rng = rng or random
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** max(0, attempt - 1)))
        # Full jitter spreads retries of many mailboxes that failed together;
        # the floor of half the ceiling keeps the growth visible.
        delay = rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def next_attempt_at(self, now: datetime, attempt: int, *, retry_after: float | None = None) -> datetime:
        return now + timedelta(seconds=self.delay(attempt, retry_after=retry_after))
