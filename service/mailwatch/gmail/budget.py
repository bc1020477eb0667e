"""Per-tenant Gmail quota budgets: one tenant's burst cannot take a shared project's quota.

Tenants whose mailboxes are watched with the operator's credentials share
that Google project's 1,200,000 quota units a minute. Each tenant gets a
token bucket of `units_per_minute` (the deployment's
`MAILWATCH_GMAIL_TENANT_UNITS_PER_MINUTE`, or the tenant's own budget from
its Google settings), holding at most `burst_seconds` worth of units. A call
takes its units (gmail/quota.py's table) before it is made; a tenant in debt
waits until the bucket has refilled, in call order, so a bulk registration,
backfill or resync storm is spread out at the tenant's budget while other
tenants' calls go straight through. `deferred()` names the tenants in debt
so the sync claim leaves their due mailboxes to later (their syncs would
only wait here, holding a worker slot another tenant could use).

Each replica keeps its own buckets (no coordination): a tenant whose work is
spread over R replicas may spend up to R budgets. Over any 60 s a tenant
spends at most `units_per_minute * (1 + burst_seconds / 60)` per replica.
A budget of 0 means none (no waiting).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import cachetools
from prometheus_client import Counter, Gauge

from mailwatch.gmail.quota import UNITS, tenant_label

BUDGET = Gauge(
    "mailwatch_gmail_budget_units_per_minute",
    "Gmail quota units a minute a tenant may spend from this replica (0: no budget)", ["tenant"],
)
DEFERRED_CALLS = Counter(
    "mailwatch_gmail_budget_deferred_calls_total", "Gmail calls that waited for the tenant's quota budget", ["tenant"]
)
DEFERRED_SECONDS = Counter(
    "mailwatch_gmail_budget_deferred_seconds_total", "Seconds Gmail calls waited for the tenant's quota budget",
    ["tenant"],
)

#: A tenant's own budget (None: the deployment's), looked up at most once a minute per tenant.
OverrideLookup = Callable[[uuid.UUID], Awaitable[int | None]]
OVERRIDE_TTL_SECONDS = 60.0


@dataclass
class _Bucket:
    units_per_minute: int
    capacity: float
    tokens: float
    updated: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def rate(self) -> float:
        return self.units_per_minute / 60.0

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, units: float, now: float) -> float:
        """Take `units` (going into debt if short); returns the seconds until the debt is repaid."""
        self.refill(now)
        self.tokens -= units
        return max(0.0, -self.tokens / self.rate)


class TenantBudgets:
    def __init__(
        self,
        units_per_minute: int,
        *,
        burst_seconds: float = 10.0,
        override: OverrideLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if units_per_minute < 0 or burst_seconds <= 0:
            raise ValueError("units_per_minute must be >= 0 and burst_seconds positive")
        self.default = units_per_minute
        self.burst_seconds = burst_seconds
        self._override = override
        self._overrides: cachetools.TTLCache = cachetools.TTLCache(maxsize=100_000, ttl=OVERRIDE_TTL_SECONDS)
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._clock = clock

    async def units_per_minute(self, tenant_id: uuid.UUID) -> int:
        """The tenant's budget: its own (from its Google settings) or the deployment's."""
        if self._override is None:
            return self.default
        try:
            own = self._overrides[tenant_id]
        except KeyError:
            own = self._overrides[tenant_id] = await self._override(tenant_id)
        return self.default if own is None else own

    def forget(self, tenant_id: uuid.UUID) -> None:
        """Read the tenant's own budget again on its next call (after its settings changed)."""
        self._overrides.pop(tenant_id, None)

    async def spend(self, tenant_id: uuid.UUID | None, operation: str) -> None:
        """Take the units of one `operation` call from the tenant's budget, waiting while it is in debt."""
        units = UNITS.get(operation, 0)
        if tenant_id is None or units == 0:
            return
        limit = await self.units_per_minute(tenant_id)
        label = tenant_label(tenant_id)
        BUDGET.labels(tenant=label).set(limit)
        if limit <= 0:
            self._buckets.pop(tenant_id, None)
            return
        bucket = self._bucket(tenant_id, limit)
        # One waiter at a time per tenant, in call order: the next one takes
        # its units only once the debt before it is repaid.
        async with bucket.lock:
            wait = bucket.take(units, self._clock())
            if wait > 0:
                DEFERRED_CALLS.labels(tenant=label).inc()
                DEFERRED_SECONDS.labels(tenant=label).inc(wait)
                await asyncio.sleep(wait)

    def deferred(self) -> list[uuid.UUID]:
        """Tenants in debt now: their next call would wait."""
        now = self._clock()
        found = []
        for tenant_id, bucket in self._buckets.items():
            bucket.refill(now)
            if bucket.tokens < 0 or bucket.lock.locked():
                found.append(tenant_id)
        return found

    def _bucket(self, tenant_id: uuid.UUID, limit: int) -> _Bucket:
        capacity = max(limit * self.burst_seconds / 60.0, float(max(UNITS.values())))
        bucket = self._buckets.get(tenant_id)
        if bucket is None or bucket.units_per_minute != limit:
            now = self._clock()
            bucket = self._buckets[tenant_id] = _Bucket(limit, capacity, capacity, now)
        return bucket
