"""Fault injection: which API call fails, how, and what happens to notifications.

Rules are checked in the order they were added; the first rule whose method and
user match, that still has calls left (``count``) and whose ``fraction`` roll
succeeds, decides the answer. Randomness comes from a seeded generator so a
test run is reproducible.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from mailwatch.gmail_sim.errors import GmailError

KINDS = {
    "rateLimitExceeded": "rateLimitExceeded", "429": "rateLimitExceeded",
    "userRateLimitExceeded": "userRateLimitExceeded", "403": "userRateLimitExceeded",
    "backendError": "backendError", "500": "backendError",
}


@dataclass(slots=True)
class FaultRule:
    id: int
    kind: str  # rateLimitExceeded (429) | userRateLimitExceeded (403) | backendError (500)
    method: str = "*"  # e.g. "history.list", or "*" for every Gmail API method
    user: str | None = None  # an email address, or None for every user
    fraction: float = 1.0
    remaining: int | None = None  # the next N matching calls; None = no limit
    retry_after: int = 1  # seconds, for Retry-After

    def matches(self, method: str, user: str | None) -> bool:
        if self.method not in ("*", method):
            return False
        return self.user is None or (user is not None and self.user.lower() == user.lower())

    def to_json(self) -> dict:
        return asdict(self)


def fault_error(rule: FaultRule, now: float) -> GmailError:
    retry = {"Retry-After": str(rule.retry_after)}
    if rule.kind == "rateLimitExceeded":
        return GmailError(429, "Too many concurrent requests for user.", "rateLimitExceeded", headers=retry)
    if rule.kind == "userRateLimitExceeded":
        when = datetime.fromtimestamp(now + rule.retry_after, tz=timezone.utc)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        return GmailError(403, f"User-rate limit exceeded.  Retry after {stamp}", "userRateLimitExceeded",
                          domain="usageLimits", headers=retry)
    return GmailError(500, "Internal error encountered.", "backendError")


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self.drop_fraction = 0.0
        self.delay_seconds = 0.0

    def reset(self, seed: int = 0) -> None:
        with self._lock:
            self._rng = random.Random(seed)
            self._rules.clear()
            self.drop_fraction = 0.0
            self.delay_seconds = 0.0

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def add(self, kind: str, *, method: str = "*", user: str | None = None,
            fraction: float | None = None, count: int | None = None, retry_after: int = 1) -> FaultRule:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(KINDS)}")
        fraction = 1.0 if fraction is None else float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        if int(retry_after) < 0:
            raise ValueError("retry_after must not be negative")
        with self._lock:
            rule = FaultRule(self._next_id, KINDS[kind], method or "*", user, fraction,
                             None if count is None else int(count), int(retry_after))
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, user: str | None) -> FaultRule | None:
        """The rule that fails this call, if any (consumes one of its `count`)."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, user):
                    continue
                if rule.fraction < 1.0 and self._rng.random() >= rule.fraction:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule
            return None

    # -- notifications -------------------------------------------------------------------------
    def set_notification_faults(self, *, drop_fraction: float | None = None,
                                delay_seconds: float | None = None) -> None:
        with self._lock:
            if drop_fraction is not None:
                if not 0.0 <= float(drop_fraction) <= 1.0:
                    raise ValueError("drop_fraction must be within [0, 1]")
                self.drop_fraction = float(drop_fraction)
            if delay_seconds is not None:
                if float(delay_seconds) < 0:
                    raise ValueError("delay_seconds must not be negative")
                self.delay_seconds = float(delay_seconds)

    def drop_notification(self) -> bool:
        with self._lock:
            if self.drop_fraction <= 0.0:
                return False
            return self.drop_fraction >= 1.0 or self._rng.random() < self.drop_fraction
