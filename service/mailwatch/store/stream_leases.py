"""Queries on `tenant_stream_leases`: each tenant's open change streams, counted once for every replica.

A stream holds a lease row while it is open; a tenant's streams are its
leases whose `expires` is ahead (Postgres's clock). The replica serving the
streams pushes all of its leases on in one statement (`renew`), so a
replica that dies without closing its streams (SIGKILL, a lost node) stops
counting against its tenants once their leases run out.

- `open_lease`: a lease if the tenant holds fewer than `limit` (always
  with no limit: a stream opened then counts once a limit is set); a
  transaction holding the tenant's advisory lock, so two replicas opening
  the tenant's last slot at once cannot both get it (with no limit nothing is
  counted: the lock is taken shared, and opens do not wait for each other).
  Also how a lapsed lease is taken again: its slot may have gone to another
  stream meanwhile;
- `close_lease`: the stream ended;
- `abandon_lease`: the stream ended while `open_lease` was on its way (its
  COMMIT may land after the caller gave up on it): waits for that
  transaction (the tenant's lock) before deleting;
- `renew`: this replica's unexpired leases pushed on; it returns those that
  had lapsed (e.g. while the database was away), for `open_lease` to count.
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

# A lapsed lease taken again may still have its row: that row is updated, not deleted (the
# order of a CTE's DELETE and the main INSERT is not defined, so deleting it would not free its id).
_OPEN = text("""
    WITH lapsed AS (DELETE FROM tenant_stream_leases
                    WHERE tenant_id = :tenant_id AND expires <= now() AND id <> :id)
    INSERT INTO tenant_stream_leases (id, tenant_id, expires)
    SELECT :id, :tenant_id, now() + make_interval(secs => :lease_seconds)
    WHERE :limit <= 0
       OR (SELECT count(*) FROM tenant_stream_leases WHERE tenant_id = :tenant_id AND expires > now()) < :limit
    ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires
    RETURNING id
""")

# Only unexpired leases are pushed on: a lapsed one no longer counted, and its slot may have
# been taken since, so it is returned to be taken again under the tenant's lock (`open_lease`).
# A deleted tenant's are neither pushed on nor returned.
_RENEW = text("""
    WITH pushed AS (
        UPDATE tenant_stream_leases SET expires = now() + make_interval(secs => :lease_seconds)
        WHERE id = ANY(CAST(:ids AS uuid[])) AND expires > now()
        RETURNING id
    )
    SELECT held.id
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tenant_ids AS uuid[])) AS held (id, tenant_id)
    JOIN tenants ON tenants.id = held.tenant_id
    WHERE held.id NOT IN (SELECT id FROM pushed)
""")


async def open_lease(sessions: Sessions, tenant_id: uuid.UUID, lease_id: uuid.UUID, limit: int,
                     lease_seconds: float) -> bool:
    """Lease one of the tenant's `limit` streams (0: no limit) as `lease_id` for `lease_seconds`
    (also `lease_id` again after it lapsed); False when all are held.
    The tenant's other lapsed leases are deleted on the way."""
    async with transaction(sessions) as session:
        # The count and the insert after it must see every lease committed before: take the
        # tenant's lock first (in READ COMMITTED, the next statement's snapshot is taken after it).
        # With no limit there is no count to protect: shared, so such opens never queue on each
        # other, while `abandon_lease` (exclusive) still waits for one in flight.
        await _lock_tenant(session, tenant_id, shared=limit <= 0)
        row = (await session.execute(_OPEN, {"id": lease_id, "tenant_id": tenant_id, "limit": limit,
                                             "lease_seconds": lease_seconds})).one_or_none()
    return row is not None


async def close_lease(sessions: Sessions, lease_id: uuid.UUID) -> None:
    async with autocommit(sessions) as session:
        await session.execute(delete(_leases).where(_leases.c.id == lease_id))


async def abandon_lease(sessions: Sessions, tenant_id: uuid.UUID, lease_id: uuid.UUID) -> None:
    """Delete `lease_id`, whose `open_lease` was interrupted (cancelled, or its connection lost)
    with the outcome unknown: the tenant's lock waits until that transaction has committed or
    rolled back on the server, even if its connection is gone, so a late COMMIT is not missed."""
    async with transaction(sessions) as session:
        await _lock_tenant(session, tenant_id)
        await session.execute(delete(_leases).where(_leases.c.id == lease_id))


_LOCK = text("SELECT pg_advisory_xact_lock(CAST(:a AS int4), CAST(:b AS int4))")
_LOCK_SHARED = text("SELECT pg_advisory_xact_lock_shared(CAST(:a AS int4), CAST(:b AS int4))")


async def _lock_tenant(session, tenant_id: uuid.UUID, *, shared: bool = False) -> None:
    await session.execute(_LOCK_SHARED if shared else _LOCK,
                          {"a": STREAM_LEASE_LOCK_CLASS, "b": tenant_lock_key(tenant_id)})


async def renew(sessions: Sessions, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
    """Push the unexpired of `leases` (lease id -> tenant id) on to `lease_seconds` from now;
    the lapsed ones (a deleted tenant's left out), which this did not push on."""
    if not leases:
        return set()
    async with autocommit(sessions) as session:
        rows = await session.execute(_RENEW, {"ids": list(leases), "tenant_ids": list(leases.values()),
                                              "lease_seconds": lease_seconds})
        return {row.id for row in rows}


_HELD_BY_TENANT = text("""
    SELECT tenants.id AS tenant_id, count(leases.id) AS streams
      FROM tenants
      LEFT JOIN tenant_stream_leases AS leases ON leases.tenant_id = tenants.id AND leases.expires > now()
  GROUP BY tenants.id
""")


async def held_by_tenant(sessions: Sessions) -> dict[uuid.UUID, int]:
    """Every tenant's streams open now, all replicas together (0 for a tenant with none)."""
    async with autocommit(sessions) as session:
        return {row.tenant_id: row.streams for row in await session.execute(_HELD_BY_TENANT)}


async def held(sessions: Sessions, tenant_id: uuid.UUID) -> int:
    """The tenant's streams open now, all replicas together."""
    async with autocommit(sessions) as session:
        return int((await session.execute(text(
            "SELECT count(*) FROM tenant_stream_leases WHERE tenant_id = :tenant_id AND expires > now()"),
            {"tenant_id": tenant_id})).scalar_one())
