"""AdminService and the AuthInterceptor against a real, migrated Postgres,
over a real server bound to port 0 and a real channel."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from mailwatch.api.admin import AdminServicer
from mailwatch.api.interceptors import AuthInterceptor, server_interceptors
from mailwatch.request_context import current_tenant_id
from mailwatch.store.db import create_engine, session_factory
from mailwatch.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
    resources_pb2,
)

pytestmark = pytest.mark.integration

OPERATOR = (("authorization", "Bearer op-token"),)


class WhoAmI(mailbox_service_pb2_grpc.MailboxServiceServicer):
    """GetMailbox answers with the authenticated tenant id as the mailbox id."""

    async def GetMailbox(self, request, context):
        return resources_pb2.Mailbox(id=str(current_tenant_id()))


@pytest.fixture
async def api(database_url):
    engine = create_engine(database_url, pool_size=2)
    sessions = session_factory(engine)
    interceptor = AuthInterceptor(sessions, operator_token="op-token", cache_ttl=60)
    server = grpc.aio.server(interceptors=server_interceptors(interceptor))
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(sessions, api_key_cache=interceptor.cache), server
    )
    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server(WhoAmI(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    reflection.enable_server_reflection(
        ("mailwatch.v1.AdminService", "mailwatch.v1.MailboxService", reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield {
                "admin": admin_service_pb2_grpc.AdminServiceStub(channel),
                "mailboxes": mailbox_service_pb2_grpc.MailboxServiceStub(channel),
                "reflection": reflection_pb2_grpc.ServerReflectionStub(channel),
            }
    finally:
        await server.stop(None)
        await engine.dispose()


async def expect_error(awaitable, code, reason=None):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await awaitable
    assert raised.value.code() is code, raised.value.details()
    status = rpc_status.from_call(raised.value)
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    if reason is not None:
        assert info.reason == reason
    return status


async def test_tenants_and_keys_end_to_end(api):
    admin, mailboxes = api["admin"], api["mailboxes"]

    acme = await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="acme"), metadata=OPERATOR)
    assert uuid.UUID(acme.id) and acme.name == "acme" and acme.HasField("create_time")
    await expect_error(
        admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="acme"), metadata=OPERATOR),
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    await expect_error(
        admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="bad name"), metadata=OPERATOR),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    by_name = await admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_name="acme"), metadata=OPERATOR)
    by_id = await admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_id=acme.id), metadata=OPERATOR)
    assert by_name.key and by_name.key != by_id.key
    assert by_name.api_key.tenant_id == by_id.api_key.tenant_id == acme.id
    assert by_name.key.startswith(by_name.api_key.prefix)

    # The key authenticates the tenant on MailboxService.
    key_metadata = (("authorization", f"Bearer {by_name.key}"),)
    who = await mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=key_metadata)
    assert who.id == acme.id

    listed = await admin.ListApiKeys(admin_service_pb2.ListApiKeysRequest(tenant_name="acme"), metadata=OPERATOR)
    assert [k.id for k in listed.api_keys] == [by_name.api_key.id, by_id.api_key.id]
    assert not any(k.HasField("revoke_time") for k in listed.api_keys)

    # Revocation takes effect at once on this replica (the cache is emptied).
    revoked = await admin.RevokeApiKey(
        admin_service_pb2.RevokeApiKeyRequest(api_key_id=by_name.api_key.id), metadata=OPERATOR
    )
    assert revoked.HasField("revoke_time")
    again = await admin.RevokeApiKey(
        admin_service_pb2.RevokeApiKeyRequest(api_key_id=by_name.api_key.id), metadata=OPERATOR
    )
    assert again.revoke_time == revoked.revoke_time  # idempotent
    await expect_error(
        mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=key_metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    other_key = (("authorization", f"Bearer {by_id.key}"),)
    assert (await mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=other_key)).id == acme.id


async def test_not_found(api):
    admin = api["admin"]
    for request in [
        admin_service_pb2.CreateApiKeyRequest(tenant_name="nobody"),
        admin_service_pb2.CreateApiKeyRequest(tenant_id=str(uuid.uuid4())),
    ]:
        await expect_error(admin.CreateApiKey(request, metadata=OPERATOR), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    await expect_error(
        admin.ListApiKeys(admin_service_pb2.ListApiKeysRequest(tenant_id=str(uuid.uuid4())), metadata=OPERATOR),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        admin.RevokeApiKey(admin_service_pb2.RevokeApiKeyRequest(api_key_id=str(uuid.uuid4())), metadata=OPERATOR),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_list_tenants_pages(api):
    admin = api["admin"]
    names = ["b-tenant", "A-tenant", "c-tenant", "a-tenant", "B-tenant"]
    for name in names:
        await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name=name), metadata=OPERATOR)
    seen, token = [], ""
    for _ in range(10):
        page = await admin.ListTenants(
            admin_service_pb2.ListTenantsRequest(page_size=2, page_token=token), metadata=OPERATOR
        )
        assert len(page.tenants) <= 2
        seen.extend(t.name for t in page.tenants)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(names)
    await expect_error(
        admin.ListTenants(admin_service_pb2.ListTenantsRequest(page_size=-1), metadata=OPERATOR),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_list_api_keys_pages(api):
    admin = api["admin"]
    await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="paged"), metadata=OPERATOR)
    created = [
        (await admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_name="paged"), metadata=OPERATOR)).api_key.id
        for _ in range(5)
    ]
    seen, token = [], ""
    while True:
        page = await admin.ListApiKeys(
            admin_service_pb2.ListApiKeysRequest(tenant_name="paged", page_size=2, page_token=token), metadata=OPERATOR
        )
        seen.extend(k.id for k in page.api_keys)
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    # A token is bound to its tenant.
    await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="other"), metadata=OPERATOR)
    first = await admin.ListApiKeys(
        admin_service_pb2.ListApiKeysRequest(tenant_name="paged", page_size=1), metadata=OPERATOR
    )
    status = await expect_error(
        admin.ListApiKeys(
            admin_service_pb2.ListApiKeysRequest(tenant_name="other", page_token=first.next_page_token),
            metadata=OPERATOR,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in status.details)


async def test_admin_rejects_api_keys_and_wrong_tokens(api):
    admin = api["admin"]
    await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="t"), metadata=OPERATOR)
    key = (await admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_name="t"), metadata=OPERATOR)).key
    for metadata in [(), (("authorization", f"Bearer {key}"),), (("authorization", "Bearer op-tokenX"),)]:
        await expect_error(
            admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=metadata),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    await expect_error(
        api["mailboxes"].GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=(("authorization", "Bearer mwk_nope"),)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_reflection_needs_no_credential(api):
    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    responses = [r async for r in api["reflection"].ServerReflectionInfo(requests())]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"mailwatch.v1.AdminService", "mailwatch.v1.MailboxService"} <= names
