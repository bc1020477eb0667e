"""Gmail's push limit: at most one notification per second per watched user.

Extra notifications inside the window are dropped, not queued (as Gmail does);
time comes from the simulator clock, so tests advance it instead of sleeping.
"""

from __future__ import annotations

import threading


class NotificationRateLimiter:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, user: str, now: float) -> bool:
        key = user.lower()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            self._last[key] = now
            return True

    def reset(self) -> None:
        with self._lock:
            self._last.clear()
