"""Gmail's per-user concurrency cap: too many simultaneous requests for one user.

Gmail refuses a request for a user who already has "a small number" of
requests in flight, across every client of that user, with 429 "Too many
concurrent requests for user" (reason ``rateLimitExceeded``). The cap is a
setting (default 10; ``None`` lifts it for a test that needs that). The peak
seen per user is kept, so a test can check how many calls a client overlapped.

A batch's parts are separate requests that Gmail runs at the same time, each
counted against the same cap: a part given a `BatchSlots` keeps its slot until
the whole batch is answered, so the parts past the cap are refused one by one
(the batch itself is still 200).
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict

from mailwatch_devstack.gmail_sim.faults import too_many_concurrent

DEFAULT_LIMIT = 10


class BatchSlots:
    """The slots a batch's parts hold until the batch is answered (released by `release_all`)."""

    def __init__(self) -> None:
        self.users: list[str] = []


class ConcurrencyLimiter:
    def __init__(self, limit: int | None = DEFAULT_LIMIT) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self._in_flight: dict[str, int] = defaultdict(int)
        self._peak: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        with self._lock:
            self.limit = DEFAULT_LIMIT
            self._in_flight.clear()
            self._peak.clear()

    def reset_peaks(self) -> None:
        with self._lock:
            self._peak.clear()

    def set_limit(self, limit: int | None) -> None:
        if limit is not None and int(limit) < 1:
            raise ValueError("concurrentRequestsPerUser must be at least 1, or null for no limit")
        with self._lock:
            self.limit = None if limit is None else int(limit)

    def _acquire(self, key: str) -> None:
        with self._lock:
            if self.limit is not None and self._in_flight[key] >= self.limit:
                raise too_many_concurrent()
            self._in_flight[key] += 1
            self._peak[key] = max(self._peak[key], self._in_flight[key])

    def _release(self, key: str) -> None:
        with self._lock:
            if key not in self._in_flight:  # forgotten by a reset meanwhile
                return
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    @contextlib.contextmanager
    def slot(self, user: str, batch: BatchSlots | None = None):
        """Hold one of the user's request slots for the duration of a call, or raise the 429.

        With `batch`, the slot stays taken after the call until `release_all(batch)`."""
        key = user.lower()
        self._acquire(key)
        if batch is not None:
            batch.users.append(key)
            yield
            return
        try:
            yield
        finally:
            self._release(key)

    def release_all(self, batch: BatchSlots) -> None:
        for key in batch.users:
            self._release(key)
        batch.users.clear()

    def peaks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._peak)
