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
from collections import deque


class _User:
    """One user's slots in use and the callers waiting for theirs, first come first."""

    __slots__ = ("used", "waiting")

    def __init__(self) -> None:
        self.used = 0
        self.waiting: deque[tuple[int, asyncio.Future]] = deque()


class UserCallLimiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._users: dict[str, _User] = {}

    def slot(self, user: str) -> "_Slots":
        """One slot: a single call."""
        return _Slots(self, user, 1)

    def slots(self, user: str, count: int) -> "_Slots":
        """`count` slots at once (capped at the limit): a batch of that many parts."""
        return _Slots(self, user, max(1, min(count, self.limit)))

    def in_use(self) -> int:
        """Users with a call in flight or waiting (for tests and metrics)."""
        return len(self._users)

    # Every call takes and gives back a slot, so the path without waiting is plain
    # bookkeeping: no lock, no condition, no task switch. Only a caller that must wait
    # gets a future, resolved by the release that makes room for it.

    async def _acquire(self, key: str, count: int) -> None:
        state = self._users.get(key)
        if state is None:
            state = self._users[key] = _User()
        if not state.waiting and state.used + count <= self.limit:
            state.used += count
            return
        waiter = (count, asyncio.get_running_loop().create_future())
        state.waiting.append(waiter)
        try:
            await waiter[1]
        except BaseException:
            if waiter[1].done() and not waiter[1].cancelled():
                self._release(key, count)  # granted as it was cancelled: give the slots back
            else:
                if waiter in state.waiting:
                    state.waiting.remove(waiter)
                self._grant(state)  # the caller behind it may fit now
                self._forget_if_idle(key, state)
            raise

    def _release(self, key: str, count: int) -> None:
        state = self._users[key]
        state.used -= count
        self._grant(state)
        self._forget_if_idle(key, state)

    def _grant(self, state: _User) -> None:
        """Give the waiting callers their slots, in arrival order, while the first one fits."""
        while state.waiting and state.used + state.waiting[0][0] <= self.limit:
            count, future = state.waiting.popleft()
            if future.cancelled():
                continue  # its caller is leaving (it will not take these slots)
            state.used += count
            future.set_result(None)

    def _forget_if_idle(self, key: str, state: _User) -> None:
        # Memory follows the users in flight (a cancelled waiter may find its user already gone).
        if not state.used and not state.waiting and self._users.get(key) is state:
            del self._users[key]


class _Slots:
    """`async with`: hold `count` of the user's slots for the block."""

    __slots__ = ("_limiter", "_key", "_count")

    def __init__(self, limiter: UserCallLimiter, user: str, count: int) -> None:
        self._limiter, self._key, self._count = limiter, user.lower(), count

    async def __aenter__(self) -> None:
        await self._limiter._acquire(self._key, self._count)

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter._release(self._key, self._count)
