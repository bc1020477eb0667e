"""Per-user and per-method call counts and Gmail quota units.

Unit costs are Google's published per-method quota usage for the Gmail API
(developers.google.com/gmail/api/reference/quota). Token-endpoint grants are
counted too (method "oauth2.token", 0 units) so tests can see refreshes.
"""

from __future__ import annotations

import threading
from collections import defaultdict

QUOTA_UNITS = {
    "users.getProfile": 1,
    "users.watch": 100,
    "users.stop": 50,
    "users.history.list": 2,
    "users.messages.list": 5,
    "users.messages.get": 5,
    "users.messages.attachments.get": 5,
    "users.labels.list": 1,
    "users.labels.get": 1,
    "users.settings.sendAs.list": 1,
    "oauth2.token": 0,
}


class CallCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self._calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            self._units: dict[str, int] = defaultdict(int)
            self._batch_sizes: list[int] = []  # parts per batch request, in arrival order

    def record(self, user: str, method: str) -> None:
        user = user.lower()
        with self._lock:
            self._calls[user][method] += 1
            self._units[user] += QUOTA_UNITS.get(method, 0)

    def record_batch(self, parts: int) -> None:
        """One batch request (its parts are counted one by one as they are dispatched)."""
        with self._lock:
            self._batch_sizes.append(parts)

    def snapshot(self) -> dict:
        with self._lock:
            per_user = {u: dict(m) for u, m in self._calls.items()}
            per_method: dict[str, int] = defaultdict(int)
            for methods in per_user.values():
                for method, n in methods.items():
                    per_method[method] += n
            units = dict(self._units)
            batch_sizes = list(self._batch_sizes)
        return {
            "batches": {"requests": len(batch_sizes), "sizes": batch_sizes},
            "calls": per_user,
            "methods": dict(per_method),
            "quotaUnits": units,
            "totalCalls": sum(per_method.values()),
            "totalQuotaUnits": sum(units.values()),
        }
