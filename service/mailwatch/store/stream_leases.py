"""Queries on `tenant_stream_leases`: each tenant's open change streams, counted once for every replica.

A stream holds a lease row while it is open; a tenant's streams are its
leases whose `expires` is ahead (Postgres's clock). The replica serving the
streams pushes all of its leases on in one statement (`renew`), so a
replica that dies without closing its streams (SIGKILL, a lost node) stops
counting against its tenants once their leases run out.

- `open_lease`: a new lease if the tenant holds fewer than `limit` (always
  with no limit: a stream opened then counts once a limit is set); a
  transaction holding the tenant's advisory lock, so two replicas opening
  the tenant's last slot at once cannot both get it;
- `close_lease`: the stream ended;
- `renew`: this replica's leases pushed on (any that had already lapsed,
  e.g. while the database was away, counted again).
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, text

from mailwatch.store.changes import tenant_lock_key
from mailwatch.store.db import Sessions, autocommit, transaction
from mailwatch.store.models import tenant_stream_leases

_leases = tenant_stream_leases

# First half of the two-int4 advisory lock key: "a tenant's stream leases" (the
# change log's is 0x6D77_0001 with the tenant's key, store/changes.py).
STREAM_LEASE_LOCK_CLASS = 0x6D77_0003

_OPEN = text("""
    WITH lapsed AS (DELETE FROM tenant_stream_leases WHERE tenant_id = :tenant_id AND expires <= now())
    INSERT INTO tenant_stream_leases (id, tenant_id, expires)
    SELECT :id, :tenant_id, now() + make_interval(secs => :lease_seconds)
    WHERE :limit <= 0
       OR (SELECT count(*) FROM tenant_stream_leases WHERE tenant_id = :tenant_id AND expires > now()) < :limit
    RETURNING id
""")

_RENEW = text("""
    INSERT INTO tenant_stream_leases (id, tenant_id, expires)
    SELECT held.id, held.tenant_id, now() + make_interval(secs => :lease_seconds)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tenant_ids AS uuid[])) AS held (id, tenant_id)
    JOIN tenants ON tenants.id = held.tenant_id
    ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires
""")


async def open_lease(sessions: Sessions, tenant_id: uuid.UUID, lease_id: uuid.UUID, limit: int,
                     lease_seconds: float) -> bool:
    """Lease one of the tenant's `limit` streams (0: no limit) as `lease_id` for `lease_seconds`;
    False when all are held.
    The tenant's lapsed leases are deleted on the way."""
    async with transaction(sessions) as session:
        # The count and the insert after it must see every lease committed before: take the
        # tenant's lock first (in READ COMMITTED, the next statement's snapshot is taken after it).
        await session.execute(text("SELECT pg_advisory_xact_lock(CAST(:a AS int4), CAST(:b AS int4))"),
                              {"a": STREAM_LEASE_LOCK_CLASS, "b": tenant_lock_key(tenant_id)})
        row = (await session.execute(_OPEN, {"id": lease_id, "tenant_id": tenant_id, "limit": limit,
                                             "lease_seconds": lease_seconds})).one_or_none()
    return row is not None


async def close_lease(sessions: Sessions, lease_id: uuid.UUID) -> None:
    async with autocommit(sessions) as session:
        await session.execute(delete(_leases).where(_leases.c.id == lease_id))


async def renew(sessions: Sessions, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> None:
    """Push `leases` (lease id -> tenant id) on to `lease_seconds` from now; a lapsed one is
    leased again (its stream is still open), a deleted tenant's is not."""
    if not leases:
        return
    async with autocommit(sessions) as session:
        await session.execute(_RENEW, {"ids": list(leases), "tenant_ids": list(leases.values()),
                                       "lease_seconds": lease_seconds})


async def held(sessions: Sessions, tenant_id: uuid.UUID) -> int:
    """The tenant's streams open now, all replicas together."""
    async with autocommit(sessions) as session:
        return int((await session.execute(text(
            "SELECT count(*) FROM tenant_stream_leases WHERE tenant_id = :tenant_id AND expires > now()"),
            {"tenant_id": tenant_id})).scalar_one())
