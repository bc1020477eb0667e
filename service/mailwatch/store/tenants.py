"""Queries on `tenants`, and the verbs the admin API and the CLI call (each
opens its own session: `add_tenant`, `tenant_page`, `resolve_tenant`)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from mailwatch.domain.models import Tenant
from mailwatch.store._errors import is_unique_violation
from mailwatch.store.db import Sessions, reading, transaction
from mailwatch.store.models import tenants

_COLUMNS = (tenants.c.id, tenants.c.name, tenants.c.created, tenants.c.pruned_through_sequence)


def _tenant(row) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        created=row.created,
        pruned_through_sequence=row.pruned_through_sequence,
    )


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    """Insert a tenant; AlreadyExists if the name is taken.

    Runs in a savepoint so a duplicate leaves the caller's transaction usable.
    """
    if not name or not name.strip():
        raise InvalidArgument([FieldViolation("name", "must not be empty")])
    statement = insert(tenants).values(name=name).returning(*_COLUMNS)
    try:
        async with session.begin_nested():
            row = (await session.execute(statement)).one()
    except IntegrityError as exc:
        if is_unique_violation(exc, "uq_tenants_name"):
            raise AlreadyExists(f"tenant {name!r} already exists", metadata={"name": name}) from None
        raise
    return _tenant(row)


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    row = (await session.execute(select(*_COLUMNS).where(tenants.c.id == tenant_id))).one_or_none()
    if row is None:
        raise NotFound("tenant not found", metadata={"tenant_id": str(tenant_id)})
    return _tenant(row)


async def get_tenant_by_name(session: AsyncSession, name: str) -> Tenant:
    row = (await session.execute(select(*_COLUMNS).where(tenants.c.name == name))).one_or_none()
    if row is None:
        raise NotFound(f"tenant {name!r} not found", metadata={"name": name})
    return _tenant(row)


# Names in code point order (Python's), whatever the database's collation.
_BY_NAME = tenants.c.name.collate("C")


async def list_tenants(session: AsyncSession, *, after: str | None = None, limit: int | None = None) -> list[Tenant]:
    """Tenants by name; with `after`, only those named after it (keyset paging)."""
    statement = select(*_COLUMNS).order_by(_BY_NAME)
    if after is not None:
        statement = statement.where(_BY_NAME > after)
    if limit is not None:
        statement = statement.limit(limit)
    return [_tenant(row) for row in await session.execute(statement)]


async def add_tenant(sessions: Sessions, name: str) -> Tenant:
    async with transaction(sessions) as session:
        return await create_tenant(session, name)


async def tenant_page(sessions: Sessions, *, after: str | None = None, limit: int | None = None) -> list[Tenant]:
    async with reading(sessions) as session:
        return await list_tenants(session, after=after, limit=limit)


async def resolve_tenant(sessions: Sessions, *, tenant_id: uuid.UUID | None = None, name: str | None = None) -> uuid.UUID:
    """The id of the tenant named `name`, or of `tenant_id`; NotFound when there is none."""
    async with reading(sessions) as session:
        if name is not None:
            return (await get_tenant_by_name(session, name)).id
        assert tenant_id is not None
        return (await get_tenant(session, tenant_id)).id
