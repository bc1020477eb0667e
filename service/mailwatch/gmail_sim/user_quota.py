"""Gmail's per-user quota: 15,000 quota units per user per minute.

Each call's units (`quota.QUOTA_UNITS`) are charged to its user in a sliding
60-second window on the simulated clock; a call that takes the user past the
limit starts a `userRateLimitExceeded` lockout (403, the retry time in the
message) that lasts until enough units have left the window. The limit is a
setting (`userQuotaUnitsPerMinute`; null turns the rule off for a test that
needs to).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

DEFAULT_UNITS_PER_MINUTE = 15_000
WINDOW_SECONDS = 60.0


class UserQuota:
    def __init__(self, units_per_minute: int | None = DEFAULT_UNITS_PER_MINUTE) -> None:
        self._lock = threading.Lock()
        self.units_per_minute = units_per_minute
        self._spent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def reset(self) -> None:
        with self._lock:
            self.units_per_minute = DEFAULT_UNITS_PER_MINUTE
            self._spent.clear()

    def set_limit(self, units_per_minute: int | None) -> None:
        if units_per_minute is not None and int(units_per_minute) < 1:
            raise ValueError("userQuotaUnitsPerMinute must be at least 1, or null for no limit")
        with self._lock:
            self.units_per_minute = None if units_per_minute is None else int(units_per_minute)

    def charge(self, user: str, units: int, now: float) -> float | None:
        """Charge `units` to `user`; None if within quota, else when the user may call again."""
        with self._lock:
            if self.units_per_minute is None or units <= 0:
                return None
            spent = self._spent[user.lower()]
            while spent and spent[0][0] <= now - WINDOW_SECONDS:
                spent.popleft()
            spent.append((now, units))
            total = sum(u for _, u in spent)
            if total <= self.units_per_minute:
                return None
            # Back under the limit once the oldest charges have left the window.
            for at, charged in spent:
                total -= charged
                if total <= self.units_per_minute:
                    return at + WINDOW_SECONDS
            return now + WINDOW_SECONDS
