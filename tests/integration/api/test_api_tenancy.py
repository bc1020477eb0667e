"""Authentication and tenant isolation on every MailboxService RPC."""

from __future__ import annotations

import grpc
import pytest

from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return caught.value.code()


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer mwk_unknown")], [("authorization", "Basic x")]])
async def test_calls_without_a_valid_key_are_unauthenticated(service, metadata):
    stub = service.mailboxes
    calls = [
        lambda: stub.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=metadata),
        lambda: stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id="x"), metadata=metadata),
        lambda: stub.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(), metadata=metadata),
        lambda: stub.StopMailbox(mailbox_service_pb2.StopMailboxRequest(), metadata=metadata),
        lambda: stub.StreamChanges(mailbox_service_pb2.StreamChangesRequest(), metadata=metadata),
    ]
    for call in calls:
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_revoked_key_stops_working(service):
    operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    tenant = await service.admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="revokee"), metadata=operator)
    created = await service.admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=operator)
    auth = [("authorization", f"Bearer {created.key}")]
    await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    await service.admin.RevokeApiKey(admin_service_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.id), metadata=operator)
    code = await _code(lambda: service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_admin_requires_the_operator_token(service):
    _, tenant_auth = await service.new_tenant()
    for metadata in ([], tenant_auth, [("authorization", "Bearer wrong")]):
        code = await _code(lambda: service.admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=metadata))
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_tenants_cannot_see_or_touch_each_others_mailboxes(service):
    _, alice = await service.new_tenant("alice-co")
    _, bob = await service.new_tenant("bob-co")
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "shared@example.com"), metadata=alice)
    stub = service.mailboxes

    for call in (
        lambda: stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=bob),
        lambda: stub.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox.id), metadata=bob),
        lambda: stub.StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(mailbox_ids=[mailbox.id]), metadata=bob
        ),
    ):
        assert await _code(call) == grpc.StatusCode.NOT_FOUND

    listed = await stub.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=bob)
    assert list(listed.mailboxes) == []

    # Bob registering the same address gets his own mailbox; Alice's is untouched.
    bobs = await stub.RegisterMailbox(sa_request(service.sim, "shared@example.com"), metadata=bob)
    assert bobs.id != mailbox.id
    still = await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=alice)
    assert still.state == mailbox.state
    alices = await stub.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=alice)
    assert [m.id for m in alices.mailboxes] == [mailbox.id]


async def test_not_found_does_not_reveal_existence(service):
    """Another tenant's mailbox and a mailbox that never existed answer the same."""
    _, alice = await service.new_tenant()
    _, bob = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "x@example.com"), metadata=alice)
    answers = []
    for mailbox_id in (mailbox.id, "00000000-0000-0000-0000-000000000001"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id), metadata=bob)
        info, _ = error_details(caught.value)
        answers.append((caught.value.code(), info.reason, caught.value.details().replace(mailbox_id, "ID")))
    assert answers[0] == answers[1]
