"""AdminService: tenants and API keys, for the operator credential only.

Authentication (the operator token) is the AuthInterceptor's job; this module
only validates requests, runs the store functions and renders the results.
Tenants and API keys are few, so their lists are paged in memory over one
query.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Sequence, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailwatch.api import convert, tokens, validation
from mailwatch.api.interceptors.auth import ApiKeyCache
from mailwatch.domain.errors import FieldViolation, InvalidArgument, SecretsNotConfigured
from mailwatch.lifecycle import google_settings
from mailwatch.secrets import SecretBox
from mailwatch.store import api_keys as api_key_store
from mailwatch.store import google_settings as settings_store
from mailwatch.store import tenants as tenant_store
from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc

T = TypeVar("T")


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """`api_key_cache`: the AuthInterceptor's cache, emptied on revocation so a
    revoked key stops working on this replica at once (others: within the TTL)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        api_key_cache: ApiKeyCache | None = None,
        secret_box: SecretBox | None = None,
        deployment_subscriptions: Sequence[str] = (),
    ) -> None:
        self._sessionmaker = sessionmaker
        self._api_key_cache = api_key_cache
        self._secret_box = secret_box  # seals tenants' default credentials
        self._deployment_subscriptions = tuple(deployment_subscriptions)  # MAILWATCH_PUBSUB_SUBSCRIPTIONS

    async def CreateTenant(self, request, context):
        name = validation.validate_create_tenant(request)
        async with self._sessionmaker() as session:
            tenant = await tenant_store.create_tenant(session, name)
            await session.commit()
        return convert.tenant_to_proto(tenant)

    async def ListTenants(self, request, context):
        page = validation.validate_list_tenants(request)
        async with self._sessionmaker() as session:
            tenants = await tenant_store.list_tenants(session)
        items, next_token = _paginate(tenants, page, key=lambda tenant: tenant.name)
        return admin_service_pb2.ListTenantsResponse(
            tenants=[convert.tenant_to_proto(tenant) for tenant in items], next_page_token=next_token
        )

    async def CreateApiKey(self, request, context):
        ref = validation.validate_create_api_key(request)
        async with self._sessionmaker() as session:
            tenant_id = await _resolve_tenant(session, ref)
            api_key, plaintext = await api_key_store.create_api_key(session, tenant_id)
            await session.commit()
        return admin_service_pb2.CreateApiKeyResponse(api_key=convert.api_key_to_proto(api_key), key=plaintext)

    async def ListApiKeys(self, request, context):
        ref, page = validation.validate_list_api_keys(request)
        async with self._sessionmaker() as session:
            tenant_id = await _resolve_tenant(session, ref)
            keys = await api_key_store.list_api_keys(session, tenant_id)
        items, next_token = _paginate(keys, page, key=lambda key: [key.created.isoformat(timespec="microseconds"), str(key.id)])
        return admin_service_pb2.ListApiKeysResponse(
            api_keys=[convert.api_key_to_proto(key) for key in items], next_page_token=next_token
        )

    async def RevokeApiKey(self, request, context):
        key_id = validation.validate_revoke_api_key(request)
        async with self._sessionmaker() as session:
            api_key = await api_key_store.revoke_api_key(session, key_id)
            await session.commit()
        if self._api_key_cache is not None:
            # The cache is keyed by key digest, not id: dropping everything is
            # the simple correct thing, and revocations are rare.
            self._api_key_cache.clear()
        return convert.api_key_to_proto(api_key)

    async def SetTenantGoogleSettings(self, request, context):
        ref, settings = validation.validate_set_google_settings(request)
        if self._secret_box is None:
            raise SecretsNotConfigured("this server cannot seal credentials (MAILWATCH_SECRET_KEYS)")
        async with self._sessionmaker() as session, session.begin():
            tenant_id = await _resolve_tenant(session, ref)
            saved = await google_settings.save_google_settings(session, self._secret_box, tenant_id, settings)
        return convert.google_settings_to_proto(saved)

    async def GetTenantGoogleSettings(self, request, context):
        ref = validation.validate_tenant_ref(request)
        async with self._sessionmaker() as session:
            tenant_id = await _resolve_tenant(session, ref)
        settings, status = await google_settings.google_settings_with_status(self._sessionmaker, tenant_id)
        return convert.google_settings_to_proto(settings, status)

    async def ClearTenantGoogleSettings(self, request, context):
        ref = validation.validate_tenant_ref(request)
        async with self._sessionmaker() as session:
            tenant_id = await _resolve_tenant(session, ref)
            cleared = await settings_store.clear_settings(session, tenant_id)
            await session.commit()
        return admin_service_pb2.ClearTenantGoogleSettingsResponse(cleared=cleared)

    async def ListSubscriptionStatuses(self, request, context):
        async with self._sessionmaker() as session:
            sources = await settings_store.pubsub_sources(session)
            owned: list[tuple[uuid.UUID | None, str]] = [
                *((None, path) for path in self._deployment_subscriptions), *sources.subscriptions.items()]
            statuses = await settings_store.subscription_statuses_of(session, [path for _, path in owned])
        return admin_service_pb2.ListSubscriptionStatusesResponse(statuses=[
            admin_service_pb2.TenantSubscriptionStatus(
                tenant_id=str(tenant) if tenant else "",
                status=convert.subscription_status_to_proto(path, statuses.get(path)),
            )
            for tenant, path in owned
        ])


async def _resolve_tenant(session: AsyncSession, ref: validation.TenantRef) -> uuid.UUID:
    """The tenant's id; NotFound when there is no such tenant."""
    if ref.tenant_name is not None:
        return (await tenant_store.get_tenant_by_name(session, ref.tenant_name)).id
    assert ref.tenant_id is not None
    return (await tenant_store.get_tenant(session, ref.tenant_id)).id


def _paginate(
    items: Sequence[T], page: validation.PageRequest, *, key: Callable[[T], Any]
) -> tuple[list[T], str]:
    """One page of `items` (already sorted by `key`) after the token's position."""
    # Sort here rather than trust the database's collation to agree with Python's.
    items = sorted(items, key=key)
    start = 0
    if page.position is not None:
        # First item strictly after the position; tolerant of the item having
        # been deleted since the token was issued.
        try:
            start = next((index for index, item in enumerate(items) if key(item) > page.position), len(items))
        except TypeError:  # a token of ours always compares; a forged one may not
            raise InvalidArgument([FieldViolation("page_token", "page token is not valid")]) from None
    chunk = list(items[start : start + page.page_size])
    more = start + page.page_size < len(items)
    next_token = tokens.encode_page_token(key(chunk[-1]), fingerprint=page.fingerprint) if more and chunk else ""
    return chunk, next_token
