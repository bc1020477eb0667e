"""Injectable time: workers ask a clock, so tests can move it days ahead."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class OffsetClock:
    """The system clock shifted by an adjustable offset (tests, `mailwatch dev`)."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta
