"""Log lines that a caller can make us repeat at will: one line per key per interval, with the count.

A refused call (a tenant past one of its limits) is the caller's doing: a
client looping on a refusal, or abuse, would otherwise write a line per
call. `ThrottledLog.log(key, message)` writes the first occurrence of `key`
at once; the ones after it within `interval` seconds are only counted, and
the first one after that writes one line saying how many there were since
the last line. The counts are exact in the metrics (e.g.
`mailwatch_limit_refusals_total`); the log says who and why, not how often
to the call. Keys are few (tenant × reason); the least recently seen beyond
`max_keys` are forgotten (their next occurrence is logged at once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Hashable

import cachetools

#: Seconds between two lines of one key.
INTERVAL_SECONDS = 60.0


@dataclass
class _Seen:
    logged_at: float
    since: int = 0  # occurrences not logged since `logged_at`


class ThrottledLog:
    def __init__(self, logger: logging.Logger, *, level: int = logging.WARNING, interval: float = INTERVAL_SECONDS,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._seen: cachetools.LRUCache = cachetools.LRUCache(maxsize=max_keys)

    def log(self, key: Hashable, message: str, **extra: object) -> bool:
        """Log `message` for `key` unless a line for `key` was written within the interval
        (then only count it); whether a line was written."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.logged_at < self._interval:
            seen.since += 1
            return False
        count = 1 if seen is None else seen.since + 1
        elapsed = None if seen is None else now - seen.logged_at
        self._seen[key] = _Seen(logged_at=now)
        if elapsed is None or count == 1:
            self._logger.log(self._level, "%s", message, extra=extra)
        else:
            self._logger.log(self._level, "%s (%d such in the last %.0f s; one line per %.0f s)", message, count,
                             elapsed, self._interval, extra=extra)
        return True
