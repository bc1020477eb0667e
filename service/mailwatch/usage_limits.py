"""Per-tenant limits on mailwatch's own resources: open streams, each API key's calls, registrations.

Each limit is a deployment setting (`LimitSettings`, MAILWATCH_LIMITS_*) that
a tenant's own value (`tenant_limits`, AdminService.SetTenantLimits) replaces;
0 means no limit:

- streams: `StreamChanges` streams a tenant holds open at once (a count,
  given back when the stream ends);
- rpcs_per_second: each API key's calls, a token bucket refilled at that
  rate holding one second's worth (so a burst of that many passes at once);
- registrations_per_minute: the mailboxes a tenant registers (each address
  of a batch counts one), a token bucket holding one minute's worth; a
  batch larger than that can never pass and is refused as such
  (RegistrationBatchOverLimit), not asked to wait.

Past a limit the call is refused with a `LimitExceeded` whose `retry_after`
is when trying again can pass (the API answers RESOURCE_EXHAUSTED with
RetryInfo and the reason), counted in `mailwatch_limit_refusals_total` by
reason and tenant (tenants are few: Gmail quota is labelled by tenant too).

Each replica counts on its own, in memory: with N replicas behind a balancer
that spreads calls evenly, a tenant gets about N times each limit in all
(docs/operations.md says how to size them). A tenant's own limits are read
from Postgres at most once a minute per replica, and again at once on the
replica whose admin API changed them (`forget`).

A hand-written bucket rather than a library: `limits`' in-memory storage
runs an expiry pass over every key through a worker thread after each hit,
and aiolimiter waits for capacity instead of refusing and does not say when
capacity returns, which RetryInfo needs.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import cachetools
from prometheus_client import Counter, Gauge

from mailwatch.config import LimitSettings
from mailwatch.domain.errors import (
    LimitExceeded,
    RegistrationBatchOverLimit,
    RegistrationRateLimited,
    RpcRateLimited,
    TenantStreamLimit,
)
from mailwatch.domain.models import TenantLimits
from mailwatch.gmail.quota import tenant_label

REFUSALS = Counter(
    "mailwatch_limit_refusals_total",
    "Calls refused for going past a tenant's limit (RESOURCE_EXHAUSTED), by reason and tenant", ["reason", "tenant"],
)
TENANT_STREAMS = Gauge("mailwatch_tenant_streams_open", "Change streams a tenant holds open on this replica", ["tenant"])

#: RetryInfo of a refused stream: streams end at unknown times, so a consumer checks back this often.
STREAM_RETRY_SECONDS = 5.0
#: A tenant's own limits are re-read after this long (or at once after `forget`).
OVERRIDE_TTL_SECONDS = 60.0
#: API keys whose buckets are kept; the least recently used beyond it start full again.
MAX_KEY_BUCKETS = 100_000

OwnLimits = Callable[[uuid.UUID], Awaitable[TenantLimits]]


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `capacity` held; taking is all or nothing."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, per_second: float, capacity: float, now: float) -> "TokenBucket":
        return cls(per_second, capacity, capacity, now)

    def take(self, amount: float, now: float) -> float:
        """Take `amount` and return 0, or take nothing and return the seconds until `amount` is there."""
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits in force for one tenant (0: none), and which of them are its own."""

    streams: int
    rpcs_per_second: int
    registrations_per_minute: int
    own: TenantLimits


def effective(defaults: LimitSettings, own: TenantLimits) -> EffectiveLimits:
    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return EffectiveLimits(
        streams=pick(own.streams, defaults.streams_per_tenant),
        rpcs_per_second=pick(own.rpcs_per_second, defaults.rpcs_per_second_per_key),
        registrations_per_minute=pick(own.registrations_per_minute, defaults.registrations_per_minute_per_tenant),
        own=own,
    )


class UsageLimits:
    """The three limits of one process; see the module docstring."""

    def __init__(self, defaults: LimitSettings, own_limits: OwnLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults
        self._own_limits = own_limits
        self._clock = clock
        self._own: cachetools.TTLCache = cachetools.TTLCache(maxsize=100_000, ttl=OVERRIDE_TTL_SECONDS)
        self._key_buckets: cachetools.LRUCache = cachetools.LRUCache(maxsize=MAX_KEY_BUCKETS)
        self._registration_buckets: dict[uuid.UUID, TokenBucket] = {}
        self._streams: dict[uuid.UUID, int] = {}

    async def limits_of(self, tenant_id: uuid.UUID) -> EffectiveLimits:
        """The tenant's limits in force: its own where it has them, else the deployment's."""
        if self._own_limits is None:
            return effective(self.defaults, TenantLimits())
        try:
            own = self._own[tenant_id]
        except KeyError:
            own = self._own[tenant_id] = await self._own_limits(tenant_id)
        return effective(self.defaults, own)

    def forget(self, tenant_id: uuid.UUID) -> None:
        """Read the tenant's own limits again on its next call (they were just changed)."""
        self._own.pop(tenant_id, None)

    async def take_call(self, tenant_id: uuid.UUID, key: bytes) -> None:
        """Count one call of API key `key` (its digest); RpcRateLimited when its bucket is empty."""
        rate = (await self.limits_of(tenant_id)).rpcs_per_second
        if rate <= 0:
            return
        now = self._clock()
        bucket = self._key_buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self._key_buckets[key] = TokenBucket.full(rate, rate, now)
        wait = bucket.take(1, now)
        if wait > 0:
            self._refuse(RpcRateLimited(
                f"this API key used up its {rate} calls a second; retry after {wait:.3f} s",
                metadata={"limit": str(rate)}, retry_after=wait), tenant_id)

    async def take_registrations(self, tenant_id: uuid.UUID, count: int) -> None:
        """Count `count` mailbox registrations; RegistrationRateLimited when the tenant's minute is used up,
        RegistrationBatchOverLimit when `count` alone is more than a minute's worth."""
        per_minute = (await self.limits_of(tenant_id)).registrations_per_minute
        if per_minute <= 0 or count <= 0:
            return
        if count > per_minute:
            raise RegistrationBatchOverLimit(
                f"{count} addresses in one call, more than the {per_minute} this tenant may register a minute: "
                f"send at most {per_minute} at a time", metadata={"limit": str(per_minute), "count": str(count)})
        now = self._clock()
        bucket = self._registration_buckets.get(tenant_id)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._registration_buckets[tenant_id] = TokenBucket.full(per_minute / 60.0, per_minute, now)
        wait = bucket.take(count, now)
        if wait > 0:
            self._refuse(RegistrationRateLimited(
                f"registering {count} more mailboxes would pass this tenant's {per_minute} a minute; "
                f"retry after {wait:.3f} s", metadata={"limit": str(per_minute), "count": str(count)},
                retry_after=wait), tenant_id)

    @contextlib.asynccontextmanager
    async def stream_slot(self, tenant_id: uuid.UUID) -> AsyncIterator[None]:
        """Hold one of the tenant's open streams for the block; TenantStreamLimit when all are taken."""
        limit = (await self.limits_of(tenant_id)).streams
        open_now = self._streams.get(tenant_id, 0)
        if 0 < limit <= open_now:
            self._refuse(TenantStreamLimit(
                f"this tenant already holds {limit} open change streams on this server, its limit; close one, or "
                f"retry after {STREAM_RETRY_SECONDS:g} s", metadata={"limit": str(limit)},
                retry_after=STREAM_RETRY_SECONDS), tenant_id)
        label = tenant_label(tenant_id)
        self._streams[tenant_id] = open_now + 1
        TENANT_STREAMS.labels(tenant=label).inc()
        try:
            yield
        finally:
            left = self._streams[tenant_id] - 1
            if left:
                self._streams[tenant_id] = left
            else:
                del self._streams[tenant_id]
            TENANT_STREAMS.labels(tenant=label).dec()

    def open_streams(self, tenant_id: uuid.UUID) -> int:
        return self._streams.get(tenant_id, 0)

    @staticmethod
    def _refuse(exc: LimitExceeded, tenant_id: uuid.UUID) -> None:
        REFUSALS.labels(reason=exc.reason, tenant=tenant_label(tenant_id)).inc()
        raise exc
