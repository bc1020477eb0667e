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
reason and tenant (tenants are few: Gmail quota is labelled by tenant too),
and logged at most once a minute per tenant and reason, with the count
(throttled_log.py): a client looping on a refusal cannot flood the log.

The limits hold for the deployment, all replicas together (`Counts`, kept in
Postgres by store/usage_buckets.py and store/stream_leases.py):

- a stream holds a lease row while open, which this replica pushes on every
  third of `stream_lease_seconds` for all its streams in one statement; a
  replica that dies without closing its streams stops counting against the
  tenant within `stream_lease_seconds`. A lease that lapsed anyway (the
  replica could not reach Postgres for that long) is taken again like a new
  stream's, under the tenant's lock and counted: if other streams took its
  slot meanwhile, the stream ends with TenantStreamLimit (RESOURCE_EXHAUSTED;
  its consumer resumes from its last cursor once a slot is free), so the
  tenant is never over its limit for longer than the outage;
- registrations take from the tenant's one bucket, a statement per call;
- calls must not cost a statement each: a replica takes a key's tokens from
  the key's one bucket in grants of a tenth of a second's worth
  (`grant_size`, at least one) and spends them locally, so a busy key costs
  each replica at most about ten statements a second. A refusal is
  remembered until its RetryInfo is due, so refused calls cost none.
  Over any T seconds a key makes at most rate × (1 + T) calls (the bucket)
  plus what each replica held unspent at the start: at most
  R × (grant_size − 1) more with R replicas (0 at 10 calls a second or fewer).

Without a database (`LocalCounts`: unit tests, a process with no Postgres)
each process counts on its own, in memory. A tenant's own limits are read
from Postgres at most once a minute per replica, and again at once on the
replica whose admin API changed them (`forget`).

Hand-written buckets rather than a library: `limits`' in-memory storage runs
an expiry pass over every key through a worker thread after each hit, and
aiolimiter waits for capacity instead of refusing and does not say when
capacity returns, which RetryInfo needs; neither shares a bucket through
Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Protocol

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
from mailwatch.request_context import mark_failure_logged
from mailwatch.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "mailwatch_limit_refusals_total",
    "Calls refused for going past a tenant's limit (RESOURCE_EXHAUSTED), by reason and tenant", ["reason", "tenant"],
)
# Per replica (where a tenant's streams are served); the figure its limit counts, all replicas
# together, is fleet_metrics.py's mailwatch_tenant_stream_leases.
TENANT_STREAMS = Gauge("mailwatch_tenant_streams_open",
                       "Change streams a tenant holds open on this replica (its limit counts all replicas: "
                       "mailwatch_tenant_stream_leases)", ["tenant"])

#: RetryInfo of a refused stream: streams end at unknown times, so a consumer checks back this often.
STREAM_RETRY_SECONDS = 5.0
#: A tenant's own limits are re-read after this long (or at once after `forget`).
OVERRIDE_TTL_SECONDS = 60.0
#: API keys whose grants are kept; the least recently used beyond it start with none again.
MAX_KEY_BUCKETS = 100_000
#: A replica's grant from an API key's shared bucket: this many seconds of the key's rate.
GRANT_SECONDS = 0.1
REGISTRATIONS_BUCKET = "registrations"

OwnLimits = Callable[[uuid.UUID], Awaitable[TenantLimits]]


def grant_size(rate: int) -> int:
    """The calls a replica takes from an API key's shared bucket at once: a tenth of a second's worth, at least one."""
    return max(1, math.ceil(rate * GRANT_SECONDS))


def rpc_bucket(key: bytes) -> str:
    """The name of an API key's bucket (by its digest)."""
    return "rpc:" + key.hex()


class Counts(Protocol):
    """Where the limits are counted: Postgres for a deployment (store/usage_buckets.py,
    store/stream_leases.py), or `LocalCounts`."""

    async def take(self, tenant_id: uuid.UUID, bucket: str, amount: int, per_second: float, capacity: float, *,
                   minimum: int | None = None) -> tuple[int, float]:
        """Take `amount` (or, with fewer there, as many whole tokens as there are if at least
        `minimum`; default all or nothing): (tokens taken, tokens left)."""

    async def open_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID, limit: int, lease_seconds: float) -> bool:
        """Lease one of the tenant's `limit` open streams (0: no limit, a lease all the same);
        False when all are held."""

    async def close_stream(self, lease_id: uuid.UUID) -> None: ...

    async def abandon_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID) -> None:
        """Take back a lease whose `open_stream` was interrupted, once its outcome is settled."""

    async def renew_streams(self, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
        """Push this replica's leases (lease id -> tenant id) on; those that had lapsed, not pushed on."""


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


class LocalCounts:
    """`Counts` in this process's memory alone: each process counts its own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: cachetools.LRUCache = cachetools.LRUCache(maxsize=MAX_KEY_BUCKETS)
        self._leases: dict[uuid.UUID, uuid.UUID] = {}

    async def take(self, tenant_id: uuid.UUID, bucket: str, amount: int, per_second: float, capacity: float, *,
                   minimum: int | None = None) -> tuple[int, float]:
        now = self._clock()
        held = self._buckets.get((tenant_id, bucket))
        if held is None or (held.rate, held.capacity) != (per_second, capacity):
            held = self._buckets[(tenant_id, bucket)] = TokenBucket.full(per_second, capacity, now)
        held.take(0, now)  # the refill up to now
        taken = amount if held.tokens >= amount else math.floor(held.tokens)
        if taken < (amount if minimum is None else minimum) or taken <= 0:
            return 0, held.tokens
        held.tokens -= taken
        return taken, held.tokens

    async def open_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID, limit: int, lease_seconds: float) -> bool:
        if limit > 0 and sum(1 for holder in self._leases.values() if holder == tenant_id) >= limit:
            return False
        self._leases[lease_id] = tenant_id
        return True

    async def close_stream(self, lease_id: uuid.UUID) -> None:
        self._leases.pop(lease_id, None)

    async def abandon_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID) -> None:
        self._leases.pop(lease_id, None)

    async def renew_streams(self, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
        return set()


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


@dataclass
class _KeyGrant:
    """One API key's calls as this replica sees them."""

    rate: int
    allowance: int = 0  # calls taken from the key's shared bucket and not made yet
    refused_until: float = 0.0  # (clock) the last refusal's RetryInfo is due
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class UsageLimits:
    """The three limits, counted in `counts`; see the module docstring."""

    def __init__(self, defaults: LimitSettings, own_limits: OwnLimits | None = None, *,
                 counts: Counts | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults
        self._own_limits = own_limits
        self._clock = clock
        self._counts: Counts = counts if counts is not None else LocalCounts(clock)
        self._own: cachetools.TTLCache = cachetools.TTLCache(maxsize=100_000, ttl=OVERRIDE_TTL_SECONDS)
        self._grants: cachetools.LRUCache = cachetools.LRUCache(maxsize=MAX_KEY_BUCKETS)
        self._streams: dict[uuid.UUID, int] = {}
        self._leases: dict[uuid.UUID, uuid.UUID] = {}  # this replica's open streams' leases -> tenant
        self._holders: dict[uuid.UUID, asyncio.Task] = {}  # lease -> the task serving its stream
        self._ended: dict[uuid.UUID, TenantStreamLimit] = {}  # leases lost to the limit: why their stream ends
        self._renewing: asyncio.Task | None = None
        self._endings: set[asyncio.Task] = set()  # leases being taken back or deleted (`_end_lease`)
        self._refusal_log = ThrottledLog(log, clock=clock)

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
        grant = self._grants.get(key)
        if grant is None or grant.rate != rate:
            grant = self._grants[key] = _KeyGrant(rate)
        if grant.allowance > 0:  # the common case: no statement, no wait
            grant.allowance -= 1
            return
        async with grant.lock:  # one grant taken at a time per key on this replica
            if grant.allowance > 0:
                grant.allowance -= 1
                return
            now = self._clock()
            if grant.refused_until <= now:
                want = grant_size(rate)
                taken, left = await self._counts.take(tenant_id, rpc_bucket(key), want, rate, rate, minimum=1)
                if taken:
                    grant.allowance = taken - 1
                    return
                grant.refused_until = now + (1 - left) / rate
            wait = grant.refused_until - now
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
        per_second = per_minute / 60.0
        taken, left = await self._counts.take(tenant_id, REGISTRATIONS_BUCKET, count, per_second, per_minute)
        if not taken:
            wait = (count - left) / per_second
            self._refuse(RegistrationRateLimited(
                f"registering {count} more mailboxes would pass this tenant's {per_minute} a minute; "
                f"retry after {wait:.3f} s", metadata={"limit": str(per_minute), "count": str(count)},
                retry_after=wait), tenant_id)

    @contextlib.asynccontextmanager
    async def stream_slot(self, tenant_id: uuid.UUID) -> AsyncIterator[None]:
        """Hold one of the tenant's open streams for the block; TenantStreamLimit when all are taken."""
        limit = (await self.limits_of(tenant_id)).streams
        lease_id = uuid.uuid4()
        lease_seconds = self.defaults.stream_lease_seconds
        # Every stream takes a lease, also with no limit now: a limit set later counts it.
        try:
            opened = await self._counts.open_stream(tenant_id, lease_id, limit, lease_seconds)
        except BaseException:
            # Cancelled (the caller went away) or failed with the COMMIT perhaps already sent: the
            # lease may exist, and no renewal would ever see it. Take it back (shielded) before going.
            await self._end_lease(self._counts.abandon_stream(tenant_id, lease_id), lease_seconds)
            raise
        if not opened:
            self._refuse(TenantStreamLimit(
                f"this tenant already holds {limit} open change streams, its limit; close one, or "
                f"retry after {STREAM_RETRY_SECONDS:g} s", metadata={"limit": str(limit)},
                retry_after=STREAM_RETRY_SECONDS), tenant_id)
        self._leases[lease_id] = tenant_id
        self._holders[lease_id] = asyncio.current_task()
        self._renew_leases()
        label = tenant_label(tenant_id)
        self._streams[tenant_id] = self._streams.get(tenant_id, 0) + 1
        TENANT_STREAMS.labels(tenant=label).inc()
        try:
            yield
        except asyncio.CancelledError:
            ended = self._ended.pop(lease_id, None)
            if ended is None:
                raise
            asyncio.current_task().uncancel()  # the cancel was `_end_stream`'s, not the caller's
            self._refuse(ended, tenant_id)
        finally:
            self._holders.pop(lease_id, None)
            self._ended.pop(lease_id, None)
            left = self._streams[tenant_id] - 1
            if left:
                self._streams[tenant_id] = left
            else:
                del self._streams[tenant_id]
            TENANT_STREAMS.labels(tenant=label).dec()
            if self._leases.pop(lease_id, None) is not None:
                await self._end_lease(self._counts.close_stream(lease_id), lease_seconds)

    def open_streams(self, tenant_id: uuid.UUID) -> int:
        """The tenant's streams open on this replica."""
        return self._streams.get(tenant_id, 0)

    async def close(self) -> None:
        """Stop pushing leases on (the process is stopping; its streams have ended or lapse), and
        wait for the leases still being given back: each holds a pooled connection, which must be
        back in the pool before the engine is disposed and the event loop cancels what is left."""
        task, self._renewing = self._renewing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self._endings:
            await asyncio.gather(*self._endings, return_exceptions=True)

    async def _end_lease(self, ending: Awaitable[None], lease_seconds: float) -> None:
        # Shielded: a cancelled stream (the usual end) still gives its slot back now. Its own task,
        # kept until done: a stream cancelled again meanwhile (a server's stop after its grace, on a
        # call already ending) stops waiting for it, and `close` waits instead.
        task = asyncio.create_task(self._ending(ending, lease_seconds))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)
        await asyncio.shield(task)

    @staticmethod
    async def _ending(ending: Awaitable[None], lease_seconds: float) -> None:
        try:
            await ending
        except Exception as exc:  # noqa: BLE001 - e.g. the database is away: the lease lapses by itself
            log.warning("could not end a stream's lease (%s); it stops counting within %g s", exc, lease_seconds)

    def _renew_leases(self) -> None:
        """Push this replica's leases on from now on while it holds any (one task, started on demand)."""
        if self._renewing is None:
            self._renewing = asyncio.create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        lease_seconds = self.defaults.stream_lease_seconds
        while True:
            await asyncio.sleep(lease_seconds / 3)
            if not self._leases:  # no await between this check and the next lease starting a task
                self._renewing = None
                return
            held = dict(self._leases)
            try:
                lapsed = await self._counts.renew_streams(held, lease_seconds)
                for lease_id, tenant_id in held.items():  # oldest first: they were there first
                    if lease_id in lapsed and lease_id in self._leases:
                        await self._lease_again(tenant_id, lease_id, lease_seconds)
                # A stream that ended while the renewal was on its way may have had its lease
                # written again after its own delete: delete it once more.
                for lease_id in held.keys() - self._leases.keys():
                    await self._counts.close_stream(lease_id)
            except Exception as exc:  # noqa: BLE001 - tried again in a third of a lease
                log.warning("could not renew %d stream leases (%s); they stop counting after %g s",
                            len(held), exc, lease_seconds)

    async def _lease_again(self, tenant_id: uuid.UUID, lease_id: uuid.UUID, lease_seconds: float) -> None:
        """Take a lapsed lease again as a new stream takes one; end its stream if its slot is gone."""
        limit = (await self.limits_of(tenant_id)).streams
        if await self._counts.open_stream(tenant_id, lease_id, limit, lease_seconds):
            return
        log.warning("a stream of tenant %s lost its lease (not renewed for %g s) and the tenant's %d streams are "
                    "held by others now: ending it", tenant_label(tenant_id), lease_seconds, limit)
        self._end_stream(lease_id, TenantStreamLimit(
            f"this stream's slot lapsed (its server could not renew it for {lease_seconds:g} s) and this tenant's "
            f"{limit} open change streams, its limit, are held by others now; resume from your last cursor "
            f"after {STREAM_RETRY_SECONDS:g} s, or close another stream", metadata={"limit": str(limit)},
            retry_after=STREAM_RETRY_SECONDS))

    def _end_stream(self, lease_id: uuid.UUID, why: TenantStreamLimit) -> None:
        """End the stream holding `lease_id` with `why` (its task, cancelled, raises it in `stream_slot`)."""
        holder = self._holders.get(lease_id)
        if holder is None or holder.done():
            return
        self._ended[lease_id] = why
        holder.cancel()

    def _refuse(self, exc: LimitExceeded, tenant_id: uuid.UUID) -> None:
        label = tenant_label(tenant_id)
        REFUSALS.labels(reason=exc.reason, tenant=label).inc()
        self._refusal_log.log((label, exc.reason), f"tenant {label} refused: {exc.reason}: {exc.message}")
        mark_failure_logged()  # the access log leaves it to this line
        raise exc
