"""Gmail's per-minute quotas: units per user, and units per Cloud project.

Google applies two limits at once (developers.google.com/gmail/api/reference/quota):
1,200,000 quota units per minute per project (`rateLimitExceeded`, 429) and
15,000 per minute per user (`userRateLimitExceeded`; 6,000 for projects created
on or after May 1, 2026: the simulator defaults to the stricter 6,000; it counts a
user's units across all projects, which is stricter still than Google's "per user
per project"). Each call's units (`quota.QUOTA_UNITS`) are charged
to its key (the user's address, or the token's project) in a sliding 60-second
window on the simulated clock; a charge that takes the key past the limit is
refused until enough units have left the window. Refused calls are charged too,
as Google charges quota for them. Each limit is a setting (null turns the rule
off for a test that needs to).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

USER_UNITS_PER_MINUTE = 6_000
PROJECT_UNITS_PER_MINUTE = 1_200_000
WINDOW_SECONDS = 60.0


class UnitQuota:
    def __init__(self, setting: str, default: int | None) -> None:
        self._lock = threading.Lock()
        self.setting = setting  # the control API's name for the limit, for error messages
        self.default = default
        self.units_per_minute = default
        self._spent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        # Running sum of each key's window: a project makes many calls a minute, and
        # summing its whole window on every call would cost O(calls) each time.
        self._totals: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        with self._lock:
            self.units_per_minute = self.default
            self._spent.clear()
            self._totals.clear()

    def set_limit(self, units_per_minute: int | None) -> None:
        if units_per_minute is not None and int(units_per_minute) < 1:
            raise ValueError(f"{self.setting} must be at least 1, or null for no limit")
        with self._lock:
            self.units_per_minute = None if units_per_minute is None else int(units_per_minute)

    def charge(self, key: str, units: int, now: float) -> float | None:
        """Charge `units` to `key`; None if within quota, else when `key` may call again."""
        with self._lock:
            if self.units_per_minute is None or units <= 0:
                return None
            key = key.lower()
            spent = self._spent[key]
            total = self._totals[key]
            while spent and spent[0][0] <= now - WINDOW_SECONDS:
                total -= spent.popleft()[1]
            spent.append((now, units))
            total += units
            self._totals[key] = total
            if total <= self.units_per_minute:
                return None
            # Back under the limit once the oldest charges have left the window.
            for at, charged in spent:
                total -= charged
                if total <= self.units_per_minute:
                    return at + WINDOW_SECONDS
            return now + WINDOW_SECONDS
