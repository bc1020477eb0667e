"""At most N Gmail calls in flight per user, per process.

Gmail refuses a user's request when "too many" of that user's requests are in
flight at once, counting every client of the user (429 "Too many concurrent
requests for user"). Sync, renewal, registration and any batch fan-out of this
process share one `UserCallLimiter`, so together they never hold more than
`limit` calls for one user; the rest wait their turn instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class UserCallLimiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._holders: dict[str, int] = defaultdict(int)  # callers holding or awaiting a slot

    @contextlib.asynccontextmanager
    async def slot(self, user: str):
        key = user.lower()
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(self.limit)
        self._holders[key] += 1
        try:
            async with semaphore:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:  # forget idle users: memory follows the users in flight
                del self._holders[key]
                del self._semaphores[key]

    def in_use(self) -> int:
        """Users with a call in flight or waiting (for tests and metrics)."""
        return len(self._holders)
