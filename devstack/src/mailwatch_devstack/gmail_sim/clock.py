"""The simulator's clock: wall time plus an offset that tests can advance.

Everything Gmail decides "by the clock" (token expiry, watch expiry, history
retention, the 1-notification-per-second limit) reads this clock, so a test can
jump days ahead instead of waiting. Time never goes backwards.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    def __init__(self, wall=time.time) -> None:
        self._wall = wall
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch, simulated."""
        return self._wall() + self._offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0

    @property
    def offset(self) -> float:
        return self._offset
