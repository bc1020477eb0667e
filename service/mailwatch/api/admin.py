"""AdminService: tenants and API keys, for the operator credential only.

Authentication (the operator token) is the AuthInterceptor's job; this module
only validates requests, calls the store's verbs and renders the results.
Lists are paged in SQL, like ListMailboxes (`api.paging`).
"""

from __future__ import annotations

import uuid
from typing import Sequence

from mailwatch.api import convert
from mailwatch.api.interceptors.auth import ApiKeyCache
from mailwatch.api.paging import after_created_id, after_text, one_page
from mailwatch.api.validation import admin as validation
from mailwatch.config import LimitSettings
from mailwatch.domain.errors import SecretsNotConfigured
from mailwatch.gmail.budget import TenantBudgets
from mailwatch.lifecycle import google_settings
from mailwatch.secrets import SecretBox
from mailwatch.store import api_keys as api_key_store
from mailwatch.store import google_settings as settings_store
from mailwatch.store import tenant_limits as limits_store
from mailwatch.store import tenants as tenant_store
from mailwatch.store.db import Sessions
from mailwatch.usage_limits import UsageLimits, effective
from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """`api_key_cache`: the AuthInterceptor's cache, emptied on revocation so a
    revoked key stops working on this replica at once (others: within the TTL)."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        api_key_cache: ApiKeyCache | None = None,
        secret_box: SecretBox | None = None,
        deployment_subscriptions: Sequence[str] = (),
        budgets: TenantBudgets | None = None,
        limits: UsageLimits | None = None,
    ) -> None:
        self._sessions = sessions
        self._api_key_cache = api_key_cache
        self._secret_box = secret_box  # seals tenants' default credentials
        self._deployment_subscriptions = tuple(deployment_subscriptions)  # MAILWATCH_PUBSUB_SUBSCRIPTIONS
        self._budgets = budgets or TenantBudgets(0)  # the Gmail client's: a new budget applies at once
        self._limits = limits  # the server's: new limits apply at once on this replica

    async def CreateTenant(self, request, context):
        name = validation.validate_create_tenant(request)
        return convert.tenant_to_proto(await tenant_store.add_tenant(self._sessions, name))

    async def ListTenants(self, request, context):
        page = validation.validate_list_tenants(request)
        found = await tenant_store.tenant_page(
            self._sessions, after=after_text(page.position), limit=page.page_size + 1)
        tenants, next_token = one_page(found, page, lambda tenant: tenant.name)
        return admin_service_pb2.ListTenantsResponse(
            tenants=[convert.tenant_to_proto(tenant) for tenant in tenants], next_page_token=next_token
        )

    async def CreateApiKey(self, request, context):
        ref = validation.validate_create_api_key(request)
        api_key, plaintext = await api_key_store.issue_api_key(self._sessions, await self._tenant_id(ref))
        return admin_service_pb2.CreateApiKeyResponse(api_key=convert.api_key_to_proto(api_key), key=plaintext)

    async def ListApiKeys(self, request, context):
        ref, page = validation.validate_list_api_keys(request)
        after = after_created_id(page.position)
        found = await api_key_store.api_key_page(
            self._sessions, await self._tenant_id(ref), after=after, limit=page.page_size + 1)
        keys, next_token = one_page(
            found, page, lambda key: [key.created.isoformat(timespec="microseconds"), str(key.id)])
        return admin_service_pb2.ListApiKeysResponse(
            api_keys=[convert.api_key_to_proto(key) for key in keys], next_page_token=next_token
        )

    async def RevokeApiKey(self, request, context):
        key_id = validation.validate_revoke_api_key(request)
        api_key = await api_key_store.revoke_key(self._sessions, key_id)
        if self._api_key_cache is not None:
            # The cache is keyed by key digest, not id: dropping everything is
            # the simple correct thing, and revocations are rare.
            self._api_key_cache.clear()
        return convert.api_key_to_proto(api_key)

    async def SetTenantGoogleSettings(self, request, context):
        ref, settings = validation.validate_set_google_settings(request)
        if self._secret_box is None:
            raise SecretsNotConfigured("this server cannot seal credentials (MAILWATCH_SECRET_KEYS)")
        tenant_id = await self._tenant_id(ref)
        saved = await google_settings.save_google_settings(self._sessions, self._secret_box, tenant_id, settings)
        self._budgets.forget(tenant_id)
        return convert.google_settings_to_proto(saved, gmail_budget=self._budgets.default)

    async def GetTenantGoogleSettings(self, request, context):
        ref = validation.validate_tenant_ref(request)
        settings, status = await settings_store.settings_with_status(self._sessions, await self._tenant_id(ref))
        return convert.google_settings_to_proto(settings, status, gmail_budget=self._budgets.default)

    async def ClearTenantGoogleSettings(self, request, context):
        ref = validation.validate_tenant_ref(request)
        tenant_id = await self._tenant_id(ref)
        cleared = await settings_store.remove_settings(self._sessions, tenant_id)
        self._budgets.forget(tenant_id)
        return admin_service_pb2.ClearTenantGoogleSettingsResponse(cleared=cleared)

    async def ListSubscriptionStatuses(self, request, context):
        owned, statuses = await settings_store.subscription_statuses(self._sessions, self._deployment_subscriptions)
        return admin_service_pb2.ListSubscriptionStatusesResponse(statuses=[
            admin_service_pb2.TenantSubscriptionStatus(
                tenant_id=str(tenant) if tenant else "",
                status=convert.subscription_status_to_proto(path, statuses.get(path)),
            )
            for tenant, path in owned
        ])

    async def SetTenantLimits(self, request, context):
        ref, limits = validation.validate_set_tenant_limits(request)
        tenant_id = await self._tenant_id(ref)
        saved = await limits_store.save_limits(self._sessions, tenant_id, limits)
        if self._limits is not None:
            self._limits.forget(tenant_id)
        return convert.tenant_limits_to_proto(tenant_id, effective(self._default_limits(), saved))

    async def GetTenantLimits(self, request, context):
        tenant_id = await self._tenant_id(validation.validate_tenant_ref(request))
        own = await limits_store.own_limits(self._sessions, tenant_id)
        return convert.tenant_limits_to_proto(tenant_id, effective(self._default_limits(), own))

    def _default_limits(self) -> LimitSettings:
        return LimitSettings() if self._limits is None else self._limits.defaults

    async def _tenant_id(self, ref: validation.TenantRef) -> uuid.UUID:
        """The tenant's id; NotFound when there is no such tenant."""
        return await tenant_store.resolve_tenant(self._sessions, tenant_id=ref.tenant_id, name=ref.tenant_name)
