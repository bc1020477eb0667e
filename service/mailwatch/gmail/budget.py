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
so the sync and renewal claims leave their due mailboxes to later (their
work would only wait here, holding a worker slot another tenant could use).

The budget holds for the tenant across replicas (sync, api and every other
role calling Gmail): the bucket is one Postgres row per tenant
(`shared`, store/gmail_budgets.py), refilled by Postgres's clock. Taking
from it per call would put a statement on every Gmail call's path, so a
replica takes a grant of `grant_seconds` of the budget (at least the call's
units) and spends it locally, going back to Postgres when it runs out. A
replica holds at most one grant unspent, so over any 60 s a tenant spends at
most `units_per_minute * (1 + burst_seconds / 60)` plus, per replica, one
grant and one call: with the default 1 s grant, R replicas add at most R/60
of the budget (plus R × 100 units). Dividing the budget by the number of
live replicas instead would need that number to be right at every moment
(replicas come and go, roles differ in how much they call Gmail) and would
strand a replica's share while the tenant's work runs on another.

Without `shared` (a process with no database, e.g. a CLI tool) each process
keeps its own buckets, taken per call. A budget of 0 means none (no waiting).
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
    "Gmail quota units a minute a tenant may spend, all replicas together (0: no budget)", ["tenant"],
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


#: Take units from the tenant's bucket shared by every replica:
#: (tenant, units, refill per second, capacity) -> the units left after (negative: in debt).
SharedTake = Callable[[uuid.UUID, float, float, float], Awaitable[float]]
#: A replica's grant from the shared bucket: this many seconds of the tenant's budget.
GRANT_SECONDS = 1.0


@dataclass
class _Local:
    """One tenant's budget as this process sees it."""

    allowance: float = 0.0  # units granted from the shared bucket and not spent yet
    debt_until: float = 0.0  # (clock) until when the tenant's last take left it in debt
    tokens: float | None = None  # without a shared bucket: the process's own bucket, as of `updated`
    updated: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TenantBudgets:
    def __init__(
        self,
        units_per_minute: int,
        *,
        burst_seconds: float = 10.0,
        override: OverrideLookup | None = None,
        shared: SharedTake | None = None,
        grant_seconds: float = GRANT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if units_per_minute < 0 or burst_seconds <= 0 or grant_seconds < 0:
            raise ValueError("units_per_minute and grant_seconds must be >= 0 and burst_seconds positive")
        self.default = units_per_minute
        self.burst_seconds = burst_seconds
        self._override = override
        self._overrides: cachetools.TTLCache = cachetools.TTLCache(maxsize=100_000, ttl=OVERRIDE_TTL_SECONDS)
        self._shared = shared
        self._grant_seconds = grant_seconds if shared is not None else 0.0
        self._tenants: dict[uuid.UUID, _Local] = {}
        # Each tenant's metric label and budget gauge, looked up once rather than on every call.
        self._labels: dict[uuid.UUID, tuple[str, object]] = {}
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
        labelled = self._labels.get(tenant_id)
        if labelled is None:
            label = tenant_label(tenant_id)
            labelled = self._labels[tenant_id] = (label, BUDGET.labels(tenant=label))
        label, gauge = labelled
        gauge.set(limit)
        if limit <= 0:
            self._tenants.pop(tenant_id, None)
            return
        local = self._tenants.setdefault(tenant_id, _Local())
        # One waiter at a time per tenant, in call order: the next one takes
        # its units only once the debt before it is repaid.
        async with local.lock:
            if local.allowance >= units:
                local.allowance -= units
                return
            wait = await self._take(tenant_id, local, units, limit)
            if wait > 0:
                local.debt_until = self._clock() + wait
                DEFERRED_CALLS.labels(tenant=label).inc()
                DEFERRED_SECONDS.labels(tenant=label).inc(wait)
                await asyncio.sleep(wait)

    def deferred(self) -> list[uuid.UUID]:
        """Tenants in debt now as far as this replica knows: its next call for them would wait."""
        now = self._clock()
        return [tenant_id for tenant_id, local in self._tenants.items()
                if local.lock.locked() or local.debt_until > now]

    async def _take(self, tenant_id: uuid.UUID, local: _Local, units: int, limit: int) -> float:
        """Take a grant covering `units` (the shared bucket's, or this process's own); the
        seconds until the debt it leaves is repaid."""
        per_second = limit / 60.0
        grant = max(float(units) - local.allowance, per_second * self._grant_seconds)
        capacity = max(limit * self.burst_seconds / 60.0, float(max(UNITS.values())), grant)
        if self._shared is not None:
            left = await self._shared(tenant_id, grant, per_second, capacity)
        else:
            now = self._clock()
            if local.tokens is None:
                local.tokens, local.updated = capacity, now
            local.tokens = min(capacity, local.tokens + (now - local.updated) * per_second) - grant
            local.updated = now
            left = local.tokens
        local.allowance += grant - units
        return max(0.0, -left / per_second)
