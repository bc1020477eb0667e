"""Health, reflection, and the admin RPCs on a running server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mailwatch.v1 import admin_service_pb2
from tests.fixtures.service import OPERATOR_TOKEN

pytestmark = pytest.mark.integration


async def test_health_reports_serving(service):
    stub = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "mailwatch.v1.MailboxService", "mailwatch.v1.AdminService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(service):
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
    assert {"mailwatch.v1.MailboxService", "mailwatch.v1.AdminService", "grpc.health.v1.Health"} <= names


async def test_admin_manages_tenants_and_keys(service):
    operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    tenant = await service.admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="acme"), metadata=operator)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="acme"), metadata=operator)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    created = await service.admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_name="acme"), metadata=operator
    )
    assert created.key and created.api_key.tenant_id == tenant.id
    keys = await service.admin.ListApiKeys(admin_service_pb2.ListApiKeysRequest(tenant_id=tenant.id), metadata=operator)
    assert [k.id for k in keys.api_keys] == [created.api_key.id]
    assert created.key.encode() not in keys.SerializeToString()
    tenants = await service.admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=operator)
    assert "acme" in [t.name for t in tenants.tenants]
