"""Queries on `api_keys`: issue, revoke, list, authenticate; and the same as
verbs that open their own session (`issue_api_key`, `revoke_key`,
`api_key_page`, `authenticate`) for the admin API, the auth interceptor and the CLI.

A key is `mwk_` + 32 random bytes (urlsafe base64). Only its SHA-256 is
stored. Authentication hashes the presented key and looks the hash up through
the unique index: no stored secret is ever compared byte by byte in Python,
so there is no timing side channel to exploit, and a database leak yields no
usable key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

from sqlalchemy import DateTime, Uuid, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.errors import NotFound, Unauthenticated
from mailwatch.domain.models import ApiKey
from mailwatch.store._errors import tenant_must_exist
from mailwatch.store.db import Sessions, reading, transaction
from mailwatch.store.models import api_keys

KEY_PREFIX = "mwk_"
_RANDOM_BYTES = 32
_DISPLAY_LENGTH = len(KEY_PREFIX) + 8  # "mwk_" + 8 characters: enough to tell keys apart
_MAX_KEY_LENGTH = 128  # refuse to hash arbitrarily large garbage

_COLUMNS = (api_keys.c.id, api_keys.c.tenant_id, api_keys.c.prefix, api_keys.c.created, api_keys.c.revoked_at)


def hash_api_key(plaintext: str) -> bytes:
    return hashlib.sha256(plaintext.encode("utf-8")).digest()


def _api_key(row) -> ApiKey:
    return ApiKey(
        id=row.id, tenant_id=row.tenant_id, prefix=row.prefix, created=row.created, revoked_at=row.revoked_at
    )


async def create_api_key(session: AsyncSession, tenant_id: uuid.UUID) -> tuple[ApiKey, str]:
    """Issue a key for the tenant. The plaintext is returned once and never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
    statement = (
        insert(api_keys)
        .values(tenant_id=tenant_id, prefix=plaintext[:_DISPLAY_LENGTH], key_hash=hash_api_key(plaintext))
        .returning(*_COLUMNS)
    )
    with tenant_must_exist(tenant_id, "fk_api_keys_tenant_id_tenants"):
        async with session.begin_nested():
            row = (await session.execute(statement)).one()
    return _api_key(row), plaintext


async def revoke_api_key(
    session: AsyncSession, key_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> ApiKey:
    """Revoke a key (idempotent: a second revoke keeps the first time). NotFound if
    there is no such key, or it belongs to another tenant when `tenant_id` is given."""
    statement = (
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
        .returning(*_COLUMNS)
    )
    if tenant_id is not None:
        statement = statement.where(api_keys.c.tenant_id == tenant_id)
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise NotFound("API key not found", metadata={"api_key_id": str(key_id)})
    return _api_key(row)


async def list_api_keys(
    session: AsyncSession, tenant_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None = None,
    limit: int | None = None,
) -> list[ApiKey]:
    """The tenant's keys in (created, id) order; with `after`, only those after it (keyset paging)."""
    statement = select(*_COLUMNS).where(api_keys.c.tenant_id == tenant_id)
    if after is not None:
        after_created, after_id = after
        statement = statement.where(
            tuple_(api_keys.c.created, api_keys.c.id)
            > tuple_(literal(after_created, DateTime(timezone=True)), literal(after_id, Uuid))
        )
    statement = statement.order_by(api_keys.c.created, api_keys.c.id)
    if limit is not None:
        statement = statement.limit(limit)
    return [_api_key(row) for row in await session.execute(statement)]


async def authenticate_api_key(session: AsyncSession, plaintext: str | None) -> uuid.UUID:
    """The tenant id the key belongs to; Unauthenticated if missing, unknown or revoked.

    All failures carry the same message so a caller learns nothing about which keys exist.
    """
    failure = Unauthenticated("missing, unknown or revoked API key")
    if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > _MAX_KEY_LENGTH:
        raise failure
    row = (
        await session.execute(
            select(api_keys.c.tenant_id, api_keys.c.revoked_at).where(
                api_keys.c.key_hash == hash_api_key(plaintext)
            )
        )
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        raise failure
    return row.tenant_id


async def issue_api_key(sessions: Sessions, tenant_id: uuid.UUID) -> tuple[ApiKey, str]:
    async with transaction(sessions) as session:
        return await create_api_key(session, tenant_id)


async def revoke_key(sessions: Sessions, key_id: uuid.UUID) -> ApiKey:
    async with transaction(sessions) as session:
        return await revoke_api_key(session, key_id)


async def api_key_page(
    sessions: Sessions, tenant_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None = None,
    limit: int | None = None,
) -> list[ApiKey]:
    async with reading(sessions) as session:
        return await list_api_keys(session, tenant_id, after=after, limit=limit)


async def authenticate(sessions: Sessions, plaintext: str | None) -> uuid.UUID:
    async with reading(sessions) as session:
        return await authenticate_api_key(session, plaintext)
