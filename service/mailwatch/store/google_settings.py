"""Queries on `tenant_google_settings` and `subscription_statuses`.

Settings are read per tenant (tenant-scoped), except `pubsub_sources`, which
lists every configured subscription and push audience for ingest: those are
routing facts, never shown to a tenant. Only `find_settings` (and
`sealed_settings`) return the sealed credential; the credential itself is a
`sealed_credentials` row, shared with the tenant's mailboxes that use the same key.

Verbs that open their own session (for the admin API, the CLI, ingest and
registration): `save_settings`, `remove_settings`, `settings_with_status`,
`sealed_settings`, `subscription_statuses`, `sources`, `record_pull_outcome`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.errors import NotFound
from mailwatch.domain.models import CredentialKind, GoogleSettings, SealedCredential, SubscriptionStatus
from mailwatch.secrets import SealedSecret
from mailwatch.store import sealed_credentials
from mailwatch.store._errors import tenant_must_exist
from mailwatch.store.db import Sessions, reading, transaction
from mailwatch.store.models import sealed_credentials as sealed_table
from mailwatch.store.models import subscription_statuses, tenant_google_settings

_settings = tenant_google_settings
_statuses = subscription_statuses


def _not_found(tenant_id: uuid.UUID) -> NotFound:
    return NotFound("the tenant has no Google settings", metadata={"tenant_id": str(tenant_id)})


async def put_settings(
    session: AsyncSession, tenant_id: uuid.UUID, *, project_id: str, secret: SealedSecret,
    credential_id: str, pubsub_topic: str, pubsub_subscription: str | None,
    push_audience: str | None, gmail_units_per_minute: int | None = None,
    opens: sealed_credentials.Opens = lambda _: True,
) -> GoogleSettings:
    """Insert or replace the tenant's settings. NotFound for an unknown tenant; `opens`
    as in `sealed_credentials.put_secrets`.

    A new key of the credential the settings hold (same kind, service account
    or client id, and project) replaces it where it is stored: one sealed row,
    and every mailbox using it follows. Another credential is a row of its own;
    the old one is deleted once nothing uses it.
    """
    with tenant_must_exist(tenant_id, "fk_sealed_credentials_tenant_id_tenants"):
        async with session.begin_nested():
            current = (await session.execute(
                select(_settings.c.sealed_credential_id, _settings.c.credential_kind, _settings.c.credential_id,
                       _settings.c.project_id).where(_settings.c.tenant_id == tenant_id).with_for_update()
            )).one_or_none()
            if current is not None and (current.credential_kind, current.credential_id, current.project_id) == (
                    secret.kind.value, credential_id, project_id):
                sealed_id = await sealed_credentials.put_replacing(session, tenant_id, secret,
                                                                   current.sealed_credential_id, opens=opens)
            else:
                sealed_id = (await sealed_credentials.put_secrets(
                    session, tenant_id, [secret], opens=opens))[secret.digest]
    values = dict(
        project_id=project_id, credential_kind=secret.kind.value, sealed_credential_id=sealed_id,
        credential_id=credential_id, pubsub_topic=pubsub_topic, pubsub_subscription=pubsub_subscription,
        push_audience=push_audience, gmail_units_per_minute=gmail_units_per_minute,
    )
    statement = (
        insert(_settings).values(tenant_id=tenant_id, **values)
        .on_conflict_do_update(index_elements=[_settings.c.tenant_id], set_={**values, "updated": func.now()})
        .returning(*_settings.c)
    )
    with tenant_must_exist(tenant_id, "fk_tenant_google_settings_tenant_id_tenants"):
        async with session.begin_nested():
            row = (await session.execute(statement)).one()
    await sealed_credentials.sweep(session, tenant_id=tenant_id)
    return _settings_of(row)


def _settings_of(row) -> GoogleSettings:
    return GoogleSettings(
        tenant_id=row.tenant_id, project_id=row.project_id, credential_kind=CredentialKind(row.credential_kind),
        credential_id=row.credential_id, pubsub_topic=row.pubsub_topic, pubsub_subscription=row.pubsub_subscription,
        push_audience=row.push_audience, updated=row.updated, gmail_units_per_minute=row.gmail_units_per_minute,
    )


async def find_settings(session: AsyncSession, tenant_id: uuid.UUID) -> tuple[GoogleSettings, SealedCredential] | None:
    """The tenant's settings (credential not decrypted) and the sealed credential, or None."""
    row = (await session.execute(
        select(*_settings.c, sealed_table.c.digest, sealed_table.c.ciphertext)
        .join_from(_settings, sealed_table, sealed_table.c.id == _settings.c.sealed_credential_id)
        .where(_settings.c.tenant_id == tenant_id))).one_or_none()
    if row is None:
        return None
    return _settings_of(row), SealedCredential(
        sealed_credential_id=row.sealed_credential_id, kind=CredentialKind(row.credential_kind),
        digest=bytes(row.digest), ciphertext=bytes(row.ciphertext))


async def get_settings(session: AsyncSession, tenant_id: uuid.UUID) -> GoogleSettings:
    """The tenant's settings for display (no secret); NotFound when it has none."""
    found = await find_settings(session, tenant_id)
    if found is None:
        raise _not_found(tenant_id)
    return found[0]


async def clear_settings(session: AsyncSession, tenant_id: uuid.UUID) -> bool:
    """Remove the tenant's settings (and their sealed credential unless mailboxes use it)."""
    result = await session.execute(delete(_settings).where(_settings.c.tenant_id == tenant_id))
    await sealed_credentials.sweep(session, tenant_id=tenant_id)
    return bool(result.rowcount)


@dataclass(frozen=True)
class PubSubSources:
    """Every tenant's subscription (tenant id -> path) and push audience (audience -> Google projects)."""

    subscriptions: dict[uuid.UUID, str]
    push_audiences: dict[str, set[str]]


async def pubsub_sources(session: AsyncSession) -> PubSubSources:
    """Cross-tenant, for ingest only: which subscriptions to pull and which push audiences to accept."""
    rows = await session.execute(
        select(_settings.c.tenant_id, _settings.c.pubsub_subscription, _settings.c.push_audience,
               _settings.c.project_id)
    )
    subscriptions: dict[uuid.UUID, str] = {}
    audiences: dict[str, set[str]] = {}
    for row in rows:
        if row.pubsub_subscription:
            subscriptions[row.tenant_id] = row.pubsub_subscription
        if row.push_audience:
            audiences.setdefault(row.push_audience, set()).add(row.project_id)
    return PubSubSources(subscriptions, audiences)


# --- subscription health --------------------------------------------------------


async def record_pull(session: AsyncSession, subscription: str, *, error: str | None, now: datetime) -> None:
    """Record one pull's outcome (success when `error` is None)."""
    ok = error is None
    statement = insert(_statuses).values(
        subscription=subscription, ok=ok, consecutive_failures=0 if ok else 1,
        last_error=error, last_error_at=None if ok else now, last_success_at=now if ok else None,
    )
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[_statuses.c.subscription],
        set_=dict(
            ok=new.ok,
            consecutive_failures=case((new.ok, 0), else_=_statuses.c.consecutive_failures + 1),
            # The last failure stays visible (with its time) after recovery.
            last_error=func.coalesce(new.last_error, _statuses.c.last_error),
            last_error_at=func.coalesce(new.last_error_at, _statuses.c.last_error_at),
            last_success_at=func.coalesce(new.last_success_at, _statuses.c.last_success_at),
            updated=func.now(),
        ),
    )
    await session.execute(statement)


async def subscription_statuses_of(session: AsyncSession, subscriptions: list[str]) -> dict[str, SubscriptionStatus]:
    """Status per subscription path; a path never pulled is absent."""
    if not subscriptions:
        return {}
    rows = await session.execute(select(*_statuses.c).where(_statuses.c.subscription.in_(subscriptions)))
    return {
        row.subscription: SubscriptionStatus(
            subscription=row.subscription, ok=row.ok, consecutive_failures=row.consecutive_failures,
            last_error=row.last_error, last_error_at=row.last_error_at, last_success_at=row.last_success_at,
        )
        for row in rows
    }


# --- verbs ----------------------------------------------------------------------


async def save_settings(sessions: Sessions, tenant_id: uuid.UUID, **values) -> GoogleSettings:
    """`put_settings` as its own transaction (same keyword arguments)."""
    async with transaction(sessions) as session:
        return await put_settings(session, tenant_id, **values)


async def remove_settings(sessions: Sessions, tenant_id: uuid.UUID) -> bool:
    """Clear the tenant's settings; whether it had any."""
    async with transaction(sessions) as session:
        return await clear_settings(session, tenant_id)


async def settings_with_status(
    sessions: Sessions, tenant_id: uuid.UUID
) -> tuple[GoogleSettings, SubscriptionStatus | None]:
    """The tenant's settings (no secret) and its subscription's health; NotFound without settings."""
    async with reading(sessions) as session:
        settings = await get_settings(session, tenant_id)
        status = None
        if settings.pubsub_subscription:
            statuses = await subscription_statuses_of(session, [settings.pubsub_subscription])
            status = statuses.get(settings.pubsub_subscription)
    return settings, status


async def sealed_settings(sessions: Sessions, tenant_id: uuid.UUID) -> tuple[GoogleSettings, SealedCredential] | None:
    async with reading(sessions) as session:
        return await find_settings(session, tenant_id)


async def gmail_budget(sessions: Sessions, tenant_id: uuid.UUID) -> int | None:
    """The tenant's own Gmail quota budget (units a minute); None: it has none of its own."""
    async with reading(sessions) as session:
        return (await session.execute(
            select(_settings.c.gmail_units_per_minute).where(_settings.c.tenant_id == tenant_id))).scalar_one_or_none()


async def sources(sessions: Sessions) -> PubSubSources:
    async with reading(sessions) as session:
        return await pubsub_sources(session)


async def subscription_statuses(
    sessions: Sessions, deployment: tuple[str, ...]
) -> tuple[list[tuple[uuid.UUID | None, str]], dict[str, SubscriptionStatus]]:
    """Every subscription ingest pulls, with its owner (None: the deployment's
    `deployment` paths first, then each tenant's), and the statuses recorded for them."""
    async with reading(sessions) as session:
        configured = await pubsub_sources(session)
        owned: list[tuple[uuid.UUID | None, str]] = [
            *((None, path) for path in deployment), *configured.subscriptions.items()]
        return owned, await subscription_statuses_of(session, [path for _, path in owned])


async def record_pull_outcome(sessions: Sessions, subscription: str, *, error: str | None, now: datetime) -> None:
    async with transaction(sessions) as session:
        await record_pull(session, subscription, error=error, now=now)
