"""Queries on `tenant_limits`: a tenant's own limits on mailwatch's resources.

Verbs that open their own session (for the admin API and the limiter's
lookups): `save_limits`, `own_limits`.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from mailwatch.domain.models import TenantLimits
from mailwatch.store._errors import tenant_must_exist
from mailwatch.store.db import Sessions, reading, transaction
from mailwatch.store.models import tenant_limits

_limits = tenant_limits


async def save_limits(sessions: Sessions, tenant_id: uuid.UUID, limits: TenantLimits) -> TenantLimits:
    """Replace the tenant's own limits (None fields: the deployment's). NotFound for an unknown tenant."""
    values = dict(streams=limits.streams, rpcs_per_second=limits.rpcs_per_second,
                  registrations_per_minute=limits.registrations_per_minute)
    statement = (
        insert(_limits).values(tenant_id=tenant_id, **values)
        .on_conflict_do_update(index_elements=[_limits.c.tenant_id], set_={**values, "updated": func.now()})
        .returning(_limits.c.streams, _limits.c.rpcs_per_second, _limits.c.registrations_per_minute)
    )
    with tenant_must_exist(tenant_id, "fk_tenant_limits_tenant_id_tenants"):
        async with transaction(sessions) as session:
            row = (await session.execute(statement)).one()
    return TenantLimits(*row)


async def own_limits(sessions: Sessions, tenant_id: uuid.UUID) -> TenantLimits:
    """The tenant's own limits; every field None when it has none (or does not exist)."""
    async with reading(sessions) as session:
        row = (await session.execute(
            select(_limits.c.streams, _limits.c.rpcs_per_second, _limits.c.registrations_per_minute)
            .where(_limits.c.tenant_id == tenant_id))).one_or_none()
    return TenantLimits() if row is None else TenantLimits(*row)
