"""AuthInterceptor over a real server and channel, with a fake key lookup."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from mailwatch.api.interceptors import auth, server_interceptors
from mailwatch.domain.errors import Unauthenticated
from mailwatch.request_context import RequestContextFilter, current_request_id, current_tenant_id
from mailwatch.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
    resources_pb2,
)

TENANT = uuid.UUID("11111111-2222-3333-4444-555555555555")
GOOD_KEY = "mwk_good"
OPERATOR_TOKEN = "operator-secret"


class FakeDatabase:
    """Stands for the sessions handle the interceptor hands to the key lookup."""


def fake_database():
    return FakeDatabase()


class Keys:
    def __init__(self):
        self.lookups = 0
        self.valid = {GOOD_KEY: TENANT}

    async def authenticate(self, sessions, plaintext):
        assert isinstance(sessions, FakeDatabase)
        self.lookups += 1
        if plaintext not in self.valid:
            raise Unauthenticated("missing, unknown or revoked API key")
        return self.valid[plaintext]


class Mailboxes(mailbox_service_pb2_grpc.MailboxServiceServicer):
    seen: list = []

    async def GetMailbox(self, request, context):
        self.seen.append((current_tenant_id(), current_request_id()))
        return resources_pb2.Mailbox(id=str(current_tenant_id()))

    async def StreamChanges(self, request, context):
        for _ in range(2):
            yield mailbox_service_pb2.StreamChangesResponse(
                heartbeat=mailbox_service_pb2.Heartbeat(cursor=str(current_tenant_id()).encode())
            )

    async def ListMailboxes(self, request, context):
        # Not an async generator: a plain coroutine handler works too.
        return mailbox_service_pb2.ListMailboxesResponse(next_page_token=str(current_tenant_id()))


class Admin(admin_service_pb2_grpc.AdminServiceServicer):
    async def ListTenants(self, request, context):
        with pytest.raises(Unauthenticated):
            current_tenant_id()  # the operator is not a tenant
        return admin_service_pb2.ListTenantsResponse()


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def world(grpc_serve):
    keys, clock = Keys(), Clock()
    interceptor = auth.AuthInterceptor(
        fake_database(),
        operator_token=OPERATOR_TOKEN,
        cache_ttl=5.0,
        authenticate_api_key=keys.authenticate,
        clock=clock,
    )
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    async with grpc_serve(
        (mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, Mailboxes()),
        (admin_service_pb2_grpc.add_AdminServiceServicer_to_server, Admin()),
        (health_pb2_grpc.add_HealthServicer_to_server, health_servicer),
        interceptors=server_interceptors(interceptor),
    ) as channel:
        yield {
            "keys": keys,
            "clock": clock,
            "interceptor": interceptor,
            "mailboxes": mailbox_service_pb2_grpc.MailboxServiceStub(channel),
            "admin": admin_service_pb2_grpc.AdminServiceStub(channel),
            "health": health_pb2_grpc.HealthStub(channel),
            "channel": channel,
        }


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


async def test_valid_key_puts_tenant_and_request_id_in_context(world):
    Mailboxes.seen.clear()
    metadata = bearer(GOOD_KEY) + (("x-request-id", "client-req-7"),)
    mailbox = await world["mailboxes"].GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=metadata)
    assert mailbox.id == str(TENANT)
    await world["mailboxes"].GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer(GOOD_KEY))
    (tenant1, request1), (tenant2, request2) = Mailboxes.seen
    assert tenant1 == tenant2 == TENANT
    assert request1 == "client-req-7"
    assert request2 and request2 != request1


async def test_streaming_and_undecorated_methods_are_guarded(world):
    responses = [r async for r in world["mailboxes"].StreamChanges(mailbox_service_pb2.StreamChangesRequest(), metadata=bearer(GOOD_KEY))]
    assert [r.heartbeat.cursor for r in responses] == [str(TENANT).encode()] * 2
    listed = await world["mailboxes"].ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=bearer(GOOD_KEY))
    assert listed.next_page_token == str(TENANT)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in world["mailboxes"].StreamChanges(mailbox_service_pb2.StreamChangesRequest()):
            pass
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await world["mailboxes"].ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=bearer("mwk_bad"))
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "mwk_good"),),  # no scheme
        (("authorization", "Basic mwk_good"),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer mwk_unknown"),),
        (("authorization", "Bearer mwk_good"), ("authorization", "Bearer mwk_good")),
        (("authorization", f"Bearer {OPERATOR_TOKEN}"),),  # the operator token is not an API key
    ],
    ids=["missing", "no-scheme", "basic", "empty", "unknown", "twice", "operator-token"],
)
async def test_bad_api_credentials_are_unauthenticated(world, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await world["mailboxes"].GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=metadata)
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(raised.value) == "UNAUTHENTICATED"


async def test_bearer_scheme_is_case_insensitive(world):
    await world["mailboxes"].GetMailbox(
        mailbox_service_pb2.GetMailboxRequest(), metadata=(("authorization", f"bearer {GOOD_KEY}"),)
    )


async def test_successful_lookups_are_cached_for_the_ttl_only(world):
    keys, clock, stub = world["keys"], world["clock"], world["mailboxes"]
    for _ in range(3):
        await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer(GOOD_KEY))
    assert keys.lookups == 1

    del keys.valid[GOOD_KEY]  # revoked in the database
    clock.now += 4.9
    await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer(GOOD_KEY))  # still cached
    clock.now += 0.2
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer(GOOD_KEY))
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert keys.lookups == 2


async def test_failures_are_not_cached(world):
    keys, stub = world["keys"], world["mailboxes"]
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer("mwk_new"))
    keys.valid["mwk_new"] = TENANT  # the key is issued
    await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=bearer("mwk_new"))


async def test_admin_needs_the_operator_token(world):
    admin = world["admin"]
    await admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=bearer(OPERATOR_TOKEN))
    for metadata in [(), bearer("wrong"), bearer(GOOD_KEY)]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=metadata)
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert world["keys"].lookups == 0  # admin calls never look API keys up


async def test_admin_disabled_without_operator_token(grpc_serve):
    interceptor = auth.AuthInterceptor(fake_database(), operator_token="", authenticate_api_key=Keys().authenticate)
    async with grpc_serve(
        (admin_service_pb2_grpc.add_AdminServiceServicer_to_server, Admin()), interceptors=server_interceptors(interceptor)
    ) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        for metadata in [(), bearer(""), bearer("anything")]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=metadata)
            assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(raised.value) == "ADMIN_DISABLED"


async def test_health_needs_no_credential(world):
    response = await world["health"].Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_method_is_unimplemented(world):
    call = world["channel"].unary_unary("/mailwatch.v1.MailboxService/NoSuchMethod")(b"", metadata=bearer(GOOD_KEY))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_current_tenant_id_outside_a_call_fails_closed():
    with pytest.raises(Unauthenticated):
        current_tenant_id()
    assert current_request_id() is None


def test_cache_is_bounded_lru():
    clock = Clock()
    cache = auth.ApiKeyCache(ttl=10, max_entries=2, clock=clock)
    a, b, c = (uuid.uuid4() for _ in range(3))
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") == a  # a is now most recent
    cache.put(b"c", c)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (a, None, c)
    clock.now += 10
    assert cache.get(b"a") is None and len(cache) == 1


def test_zero_ttl_disables_the_cache():
    cache = auth.ApiKeyCache(ttl=0, max_entries=10)
    cache.put(b"a", TENANT)
    assert cache.get(b"a") is None


def test_log_filter_adds_ids():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert RequestContextFilter().filter(record)
    assert record.tenant_id is None and record.request_id is None
