"""At most N Gmail calls in flight per user, per process.

Gmail refuses a user's request when "too many" of that user's requests are in
flight at once, counting every client of the user (429 "Too many concurrent
requests for user"). A batch's parts count one by one: each is a request in
flight. Sync, renewal, registration and batches of this process share one
`UserCallLimiter`, so together they never hold more than `limit` slots for
one user; the rest wait their turn, first come first served, instead of being
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _User:
    condition: asyncio.Condition = field(default_factory=asyncio.Condition)
    queue: deque = field(default_factory=deque)  # one ticket per caller waiting, in arrival order
    used: int = 0
    holders: int = 0  # callers holding or awaiting slots


class UserCallLimiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._users: dict[str, _User] = {}

    def slot(self, user: str):
        """One slot: a single call."""
        return self.slots(user, 1)

    @contextlib.asynccontextmanager
    async def slots(self, user: str, count: int):
        """`count` slots at once (capped at the limit): a batch of that many parts."""
        count = max(1, min(count, self.limit))
        key = user.lower()
        state = self._users.get(key)
        if state is None:
            state = self._users[key] = _User()
        state.holders += 1
        ticket = object()
        acquired = False
        try:
            async with state.condition:
                state.queue.append(ticket)
                try:
                    await state.condition.wait_for(
                        lambda: state.queue[0] is ticket and state.used + count <= self.limit)
                finally:
                    state.queue.remove(ticket)
                    state.condition.notify_all()  # the next in line may fit now
                state.used += count
                acquired = True
            yield
        finally:
            if acquired:
                async with state.condition:
                    state.used -= count
                    state.condition.notify_all()
            state.holders -= 1
            if not state.holders:  # forget idle users: memory follows the users in flight
                del self._users[key]

    def in_use(self) -> int:
        """Users with a call in flight or waiting (for tests and metrics)."""
        return len(self._users)
