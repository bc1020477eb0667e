"""Tenants' limits on our own resources counted in Postgres, for every replica at once:
`usage_limits.Counts` over store/usage_buckets.py (calls, registrations) and
store/stream_leases.py (open streams)."""

from __future__ import annotations

import asyncio
import uuid
import weakref

from mailwatch.store import stream_leases, usage_buckets
from mailwatch.store.db import Sessions


class SharedCounts:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        # Per tenant, this replica's opens under a limit take turns here before they take a
        # pooled connection: they queue on the tenant's advisory lock in Postgres anyway, and a
        # burst of them (a thousand streams reconnecting) waiting there would each hold a
        # connection and starve every other call of the pool.
        self._opening: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()

    async def take(self, tenant_id: uuid.UUID, bucket: str, amount: int, per_second: float, capacity: float, *,
                   minimum: int | None = None) -> tuple[int, float]:
        return await usage_buckets.take(self._sessions, tenant_id, bucket, amount, per_second, capacity,
                                        minimum=minimum)

    async def open_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID, limit: int, lease_seconds: float) -> bool:
        if limit <= 0:  # nothing counted: the lease's lock is shared, nobody waits
            return await stream_leases.open_lease(self._sessions, tenant_id, lease_id, limit, lease_seconds)
        turn = self._opening.get(tenant_id)
        if turn is None:
            turn = self._opening[tenant_id] = asyncio.Lock()
        async with turn:
            return await stream_leases.open_lease(self._sessions, tenant_id, lease_id, limit, lease_seconds)

    async def close_stream(self, lease_id: uuid.UUID) -> None:
        await stream_leases.close_lease(self._sessions, lease_id)

    async def abandon_stream(self, tenant_id: uuid.UUID, lease_id: uuid.UUID) -> None:
        await stream_leases.abandon_lease(self._sessions, tenant_id, lease_id)

    async def renew_streams(self, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
        return await stream_leases.renew(self._sessions, leases, lease_seconds)
