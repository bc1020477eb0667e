"""Fault injection: which API call fails, how, and what happens to notifications.

Rules are checked in the order they were added; the first rule whose method and
user match, that still has calls left (``count``) and whose ``fraction`` roll
succeeds, decides the answer. Randomness comes from a seeded generator so a
test run is reproducible.

Rate limits answer as Gmail does: the retry time is in the message text
("User-rate limit exceeded.  Retry after 2026-11-29T17:20:36.724Z", RFC 3339 on
the simulated clock), domain ``usageLimits``, status ``RESOURCE_EXHAUSTED``, and
no ``Retry-After`` header. A rate-limit fault locks the user out until that
time: every call for the user before it gets the same answer (and is still
counted, as Google still charges quota for it). ``concurrentRequests`` is the
other 429 Gmail gives, "Too many concurrent requests for user", which names no
time and leaves no lockout.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from mailwatch_devstack.gmail_sim.errors import GmailError

KINDS = {
    "rateLimitExceeded": "rateLimitExceeded", "429": "rateLimitExceeded",
    "userRateLimitExceeded": "userRateLimitExceeded", "403": "userRateLimitExceeded",
    "concurrentRequests": "concurrentRequests",
    "backendError": "backendError", "500": "backendError",
}
LOCKOUT_KINDS = {"rateLimitExceeded": 429, "userRateLimitExceeded": 403}
DEFAULT_RETRY_AFTER = 900  # Gmail's lockouts commonly last 15 minutes or more


@dataclass(slots=True)
class FaultRule:
    id: int
    kind: str  # rateLimitExceeded (429) | userRateLimitExceeded (403) | concurrentRequests (429) | backendError (500)
    method: str = "*"  # e.g. "history.list", or "*" for every Gmail API method
    user: str | None = None  # an email address, or None for every user
    fraction: float = 1.0
    remaining: int | None = None  # the next N matching calls; None = no limit
    retry_after: int = DEFAULT_RETRY_AFTER  # seconds from the call to the "Retry after" time of a lockout

    def matches(self, method: str, user: str | None) -> bool:
        if self.method not in ("*", method):
            return False
        return self.user is None or (user is not None and self.user.lower() == user.lower())

    def to_json(self) -> dict:
        return asdict(self)


def rfc3339_ms(seconds: float) -> str:
    """`2026-11-29T17:20:36.724Z`: the form Gmail writes its retry time in."""
    when = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def rate_limited(code: int, reason: str, retry_at: float) -> GmailError:
    """Gmail's rate-limit answer: the retry time in the message, no Retry-After header."""
    return GmailError(code, f"User-rate limit exceeded.  Retry after {rfc3339_ms(retry_at)}", reason,
                      domain="usageLimits", status="RESOURCE_EXHAUSTED")


def too_many_concurrent() -> GmailError:
    return GmailError(429, "Too many concurrent requests for user.", "rateLimitExceeded",
                      status="RESOURCE_EXHAUSTED")


def fault_error(rule: FaultRule, now: float) -> GmailError:
    if rule.kind in LOCKOUT_KINDS:
        return rate_limited(LOCKOUT_KINDS[rule.kind], rule.kind, now + rule.retry_after)
    if rule.kind == "concurrentRequests":
        return too_many_concurrent()
    return GmailError(500, "Internal error encountered.", "backendError")


@dataclass(frozen=True, slots=True)
class Lockout:
    code: int
    reason: str
    until: float  # simulated seconds

    def error(self) -> GmailError:
        return rate_limited(self.code, self.reason, self.until)


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._lockouts: dict[str, Lockout] = {}
        self._next_id = 1
        self.drop_fraction = 0.0
        self.delay_seconds = 0.0
        # Per mailbox (lower-cased address): {"dropFraction", "delaySeconds"}, overriding the above.
        self._per_user: dict[str, dict[str, float]] = {}

    def reset(self, seed: int = 0) -> None:
        with self._lock:
            self._rng = random.Random(seed)
            self._rules.clear()
            self._lockouts.clear()
            self.drop_fraction = 0.0
            self.delay_seconds = 0.0
            self._per_user.clear()

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def add(self, kind: str, *, method: str = "*", user: str | None = None,
            fraction: float | None = None, count: int | None = None,
            retry_after: int | None = None) -> FaultRule:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(KINDS)}")
        fraction = 1.0 if fraction is None else float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        retry_after = DEFAULT_RETRY_AFTER if retry_after is None else int(retry_after)
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        with self._lock:
            rule = FaultRule(self._next_id, KINDS[kind], method or "*", user, fraction,
                             None if count is None else int(count), retry_after)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        """Remove every rule and lift every lockout."""
        with self._lock:
            self._rules.clear()
            self._lockouts.clear()

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

    # -- lockouts --------------------------------------------------------------------------------
    def answer(self, method: str, user: str, now: float) -> GmailError | None:
        """The error for this call, if any: a lockout still running, else the first matching rule.

        A rate-limit rule that fires starts a lockout of the whole user (every method) until the
        retry time it names; calls during it do not consume rules."""
        key = user.lower()
        with self._lock:
            lockout = self._lockouts.get(key)
            if lockout is not None:
                if now < lockout.until:
                    return lockout.error()
                del self._lockouts[key]
        rule = self.pick(method, user)
        if rule is None:
            return None
        if rule.kind in LOCKOUT_KINDS:
            lockout = Lockout(LOCKOUT_KINDS[rule.kind], rule.kind, now + rule.retry_after)
            with self._lock:
                self._lockouts[key] = lockout
            return lockout.error()
        return fault_error(rule, now)

    def lock_out(self, user: str, code: int, reason: str, until: float) -> None:
        """Refuse every call of `user` until `until` (keeps a later lockout already running)."""
        key = user.lower()
        with self._lock:
            current = self._lockouts.get(key)
            if current is None or current.until < until:
                self._lockouts[key] = Lockout(code, reason, until)

    def lockouts(self, now: float) -> dict[str, dict]:
        with self._lock:
            return {user: {"code": l.code, "reason": l.reason, "until": l.until, "retryAfter": rfc3339_ms(l.until)}
                    for user, l in self._lockouts.items() if l.until > now}

    # -- notifications -------------------------------------------------------------------------
    def set_notification_faults(self, *, drop_fraction: float | None = None,
                                delay_seconds: float | None = None, user: str | None = None) -> None:
        """Drop a fraction of notifications and delay the rest: for every mailbox, or with `user`
        for that mailbox only (its setting wins over the global one; the other keeps the global)."""
        if drop_fraction is not None and not 0.0 <= float(drop_fraction) <= 1.0:
            raise ValueError("drop_fraction must be within [0, 1]")
        if delay_seconds is not None and float(delay_seconds) < 0:
            raise ValueError("delay_seconds must not be negative")
        with self._lock:
            if user is not None:
                override = self._per_user.setdefault(user.lower(), {})
                if drop_fraction is not None:
                    override["dropFraction"] = float(drop_fraction)
                if delay_seconds is not None:
                    override["delaySeconds"] = float(delay_seconds)
                return
            if drop_fraction is not None:
                self.drop_fraction = float(drop_fraction)
            if delay_seconds is not None:
                self.delay_seconds = float(delay_seconds)

    def clear_notification_faults(self, user: str) -> None:
        """The mailbox follows the global notification faults again."""
        with self._lock:
            self._per_user.pop(user.lower(), None)

    def notification_faults(self) -> dict:
        with self._lock:
            return {"dropFraction": self.drop_fraction, "delaySeconds": self.delay_seconds,
                    "byMailbox": {user: dict(override) for user, override in self._per_user.items()}}

    def _notification_setting(self, user: str | None, key: str, default: float) -> float:
        override = self._per_user.get(user.lower()) if user else None
        return override.get(key, default) if override else default

    def notification_delay(self, user: str | None = None) -> float:
        with self._lock:
            return self._notification_setting(user, "delaySeconds", self.delay_seconds)

    def drop_notification(self, user: str | None = None) -> bool:
        with self._lock:
            fraction = self._notification_setting(user, "dropFraction", self.drop_fraction)
            if fraction <= 0.0:
                return False
            return fraction >= 1.0 or self._rng.random() < fraction
