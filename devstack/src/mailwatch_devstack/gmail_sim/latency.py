"""Latency faults: an added delay per Gmail API method (and optionally per user).

Long syncs and resyncs are where leases lapse and replicas collide; a fixed
delay per call (e.g. 300 ms per `users.messages.list` page) makes them long
without making them big. The delay is served asynchronously, so other calls
(and the control API) are answered meanwhile, as Google would.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass(slots=True, frozen=True)
class LatencyRule:
    id: int
    method: str  # e.g. "users.messages.list", or "*"
    seconds: float
    user: str | None = None  # an email address (canonical), or None for every user

    def matches(self, method: str, user: str) -> bool:
        return self.method in ("*", method) and (self.user is None or self.user == user.lower())

    def to_json(self) -> dict:
        return asdict(self)


class LatencyInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[LatencyRule] = []
        self._next_id = 1

    def add(self, *, method: str, seconds: float, user: str | None = None) -> LatencyRule:
        seconds = float(seconds)
        if not 0.0 <= seconds <= 600.0:
            raise ValueError("seconds must be within [0, 600]")
        if not isinstance(method, str) or not method:
            raise ValueError("method is required (a Gmail method name or '*')")
        with self._lock:
            rule = LatencyRule(self._next_id, method, seconds, user.lower() if user else None)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[LatencyRule]:
        with self._lock:
            return list(self._rules)

    def delay(self, method: str, user: str) -> float:
        """The added delay for one call: the sum of every matching rule."""
        with self._lock:
            return sum(rule.seconds for rule in self._rules if rule.matches(method, user))
