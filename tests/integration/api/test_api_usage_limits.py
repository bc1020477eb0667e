"""Per-tenant limits on mailwatch's own resources, through the real server (usage_limits.py).

Each limit's answer: RESOURCE_EXHAUSTED, ErrorInfo with its stable reason,
a RetryInfo within what the limit allows, and the refusal counted in
`mailwatch_limit_refusals_total`; a tenant's own limit (AdminService.SetTenantLimits)
wins over the deployment's, and another tenant is not affected.
"""

from __future__ import annotations

import json
import logging
import uuid

import grpc
import pytest

from mailwatch.usage_limits import REFUSALS, STREAM_RETRY_SECONDS
from mailwatch.gmail.quota import tenant_label
from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
from tests.fixtures.rpc import error_details, retry_delay_of
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

OPERATOR = [("authorization", f"Bearer {OPERATOR_TOKEN}")]


def _refusals(reason: str, tenant_id: str) -> float:
    return REFUSALS.labels(reason=reason, tenant=tenant_label(uuid.UUID(tenant_id)))._value.get()


async def _set_limits(service, tenant_id: str, **limits) -> admin_service_pb2.TenantLimits:
    return await service.admin.SetTenantLimits(
        admin_service_pb2.SetTenantLimitsRequest(tenant_id=tenant_id, **limits), metadata=OPERATOR)


def _assert_exhausted(error: grpc.aio.AioRpcError, reason: str, *, max_delay: float, limit: int) -> float:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    info, _ = error_details(error)
    assert info.reason == reason and info.domain == "mailwatch.dev"
    assert info.metadata["limit"] == str(limit)
    delay = retry_delay_of(error)
    assert delay is not None and 0 < delay <= max_delay, delay
    return delay


async def test_an_api_keys_call_rate_is_its_tenants_own_limit_and_another_tenant_is_unaffected(make_service):
    async with make_service(limits_rpcs_per_second_per_key=50) as service:
        slow_id, slow_auth = await service.new_tenant()
        other_id, other_auth = await service.new_tenant()
        shown = await _set_limits(service, slow_id, rpcs_per_second=1)
        assert (shown.rpcs_per_second, list(shown.own_fields)) == (1, ["rpcs_per_second"])
        before = _refusals("RPC_RATE_LIMITED", slow_id)
        listing = mailbox_service_pb2.ListMailboxesRequest()

        # One call a second, bursts of one: of calls made back to back, one is refused
        # (at the latest once a second's worth has passed, which 20 calls take far longer than).
        refused = None
        for _ in range(20):
            try:
                await service.mailboxes.ListMailboxes(listing, metadata=slow_auth)
            except grpc.aio.AioRpcError as error:
                refused = error
                break
        assert refused is not None, "20 calls in a row all passed a limit of 1 a second"
        _assert_exhausted(refused, "RPC_RATE_LIMITED", max_delay=1.0, limit=1)
        assert _refusals("RPC_RATE_LIMITED", slow_id) == before + 1

        # The other tenant has the deployment's 50 a second: 20 calls in a row all pass.
        for _ in range(20):
            await service.mailboxes.ListMailboxes(listing, metadata=other_auth)
        assert _refusals("RPC_RATE_LIMITED", other_id) == 0
        # Admin calls carry no API key and are never counted.
        for _ in range(5):
            await service.admin.GetTenantLimits(admin_service_pb2.GetTenantLimitsRequest(tenant_id=slow_id),
                                                metadata=OPERATOR)

        # After the window the key calls again.
        await eventually(lambda: _passes(service.mailboxes.ListMailboxes(listing, metadata=slow_auth)),
                         what="a call after the key's second")


async def test_a_client_looping_on_its_refusal_is_counted_each_time_but_logged_once(make_service, caplog):
    async with make_service() as service:
        tenant_id, auth = await service.new_tenant()
        await _set_limits(service, tenant_id, rpcs_per_second=1)
        before = _refusals("RPC_RATE_LIMITED", tenant_id)
        listing = mailbox_service_pb2.ListMailboxesRequest()
        refused = 0
        with caplog.at_level(logging.INFO, logger="mailwatch"):
            while refused < 40:  # no pause between calls, as a client ignoring RetryInfo
                try:
                    await service.mailboxes.ListMailboxes(listing, metadata=auth)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    refused += 1
        assert _refusals("RPC_RATE_LIMITED", tenant_id) == before + refused
        lines = [r for r in caplog.records if "RPC_RATE_LIMITED" in r.getMessage()
                 or "RESOURCE_EXHAUSTED" in r.getMessage()]
        # One line per tenant and reason a minute (throttled_log.py); the access log adds none.
        assert [(r.name, r.levelno) for r in lines] == [("mailwatch.usage_limits", logging.WARNING)], \
            [r.getMessage() for r in lines]
        assert tenant_label(uuid.UUID(tenant_id)) in lines[0].getMessage()


async def _passes(call) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    return True


async def test_open_streams_are_limited_per_tenant_and_a_closed_one_frees_its_slot(make_service):
    async with make_service() as service:
        limited_id, limited_auth = await service.new_tenant()
        other_id, other_auth = await service.new_tenant()
        await _set_limits(service, limited_id, streams=1)
        limits = service.app.usage_limits
        before = _refusals("TENANT_STREAM_LIMIT", limited_id)
        request = mailbox_service_pb2.StreamChangesRequest()

        first = service.mailboxes.StreamChanges(request, metadata=limited_auth)
        await eventually(lambda: limits.open_streams(uuid.UUID(limited_id)) == 1, what="the first stream open")
        second = service.mailboxes.StreamChanges(request, metadata=limited_auth)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in second:
                pass
        _assert_exhausted(refused.value, "TENANT_STREAM_LIMIT", max_delay=STREAM_RETRY_SECONDS, limit=1)
        assert _refusals("TENANT_STREAM_LIMIT", limited_id) == before + 1

        # Another tenant (the deployment's 100) opens two.
        others = [service.mailboxes.StreamChanges(request, metadata=other_auth) for _ in range(2)]
        await eventually(lambda: limits.open_streams(uuid.UUID(other_id)) == 2, what="the other tenant's streams")

        first.cancel()
        await eventually(lambda: limits.open_streams(uuid.UUID(limited_id)) == 0, what="the first stream's slot freed")
        third = service.mailboxes.StreamChanges(request, metadata=limited_auth)
        await eventually(lambda: limits.open_streams(uuid.UUID(limited_id)) == 1, what="a stream in the freed slot")
        for call in (third, *others):
            call.cancel()
        await eventually(lambda: limits.open_streams(uuid.UUID(other_id)) == 0, what="every stream closed")


def _batch(sim, addresses: list[str]) -> mailbox_service_pb2.BatchRegisterMailboxesRequest:
    sim.create_mailboxes(addresses)
    return mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=addresses,
        service_account=mailbox_service_pb2.ServiceAccountCredentials(
            json_key=json.dumps(sim.create_service_account_key())),
    )


async def test_registrations_a_minute_count_each_address_of_a_batch(make_service):
    async with make_service() as service:
        sim = service.sim
        limited_id, limited_auth = await service.new_tenant()
        other_id, other_auth = await service.new_tenant()
        await _set_limits(service, limited_id, registrations_per_minute=3)
        before = _refusals("REGISTRATION_RATE_LIMITED", limited_id)

        three = await service.mailboxes.BatchRegisterMailboxes(
            _batch(sim, [f"limited{n}@domain.test" for n in range(3)]), metadata=limited_auth)
        assert [r.status.code for r in three.results] == [0, 0, 0]
        # Three more need the whole minute back (a call that took longer than that would pass, hence three).
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.mailboxes.BatchRegisterMailboxes(
                _batch(sim, [f"limited{n}@domain.test" for n in range(3, 6)]), metadata=limited_auth)
        _assert_exhausted(refused.value, "REGISTRATION_RATE_LIMITED", max_delay=60.0, limit=3)
        assert error_details(refused.value)[0].metadata["count"] == "3"
        assert _refusals("REGISTRATION_RATE_LIMITED", limited_id) == before + 1

        # A batch larger than a minute's worth can never pass: not a wait but a precondition.
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await service.mailboxes.BatchRegisterMailboxes(
                _batch(sim, [f"big{n}@domain.test" for n in range(4)]), metadata=limited_auth)
        assert too_big.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(too_big.value)[0].reason == "REGISTRATION_BATCH_OVER_LIMIT"
        assert retry_delay_of(too_big.value) is None

        # The other tenant (the deployment's 6,000 a minute) registers four at once.
        four = await service.mailboxes.BatchRegisterMailboxes(
            _batch(sim, [f"other{n}@domain.test" for n in range(4)]), metadata=other_auth)
        assert [r.status.code for r in four.results] == [0, 0, 0, 0]
        assert _refusals("REGISTRATION_RATE_LIMITED", other_id) == 0


async def test_tenant_limits_are_set_read_and_reset_through_the_admin_api(make_service):
    async with make_service(limits_streams_per_tenant=7, limits_rpcs_per_second_per_key=0) as service:
        tenant_id, _ = await service.new_tenant()
        get = admin_service_pb2.GetTenantLimitsRequest(tenant_id=tenant_id)

        shown = await service.admin.GetTenantLimits(get, metadata=OPERATOR)
        assert (shown.tenant_id, shown.streams, shown.rpcs_per_second, shown.registrations_per_minute,
                list(shown.own_fields)) == (tenant_id, 7, 0, 6000, [])

        await _set_limits(service, tenant_id, streams=0, registrations_per_minute=10)
        shown = await service.admin.GetTenantLimits(get, metadata=OPERATOR)
        assert (shown.streams, shown.rpcs_per_second, shown.registrations_per_minute) == (0, 0, 10)
        assert list(shown.own_fields) == ["streams", "registrations_per_minute"]
        limits = await service.app.usage_limits.limits_of(uuid.UUID(tenant_id))
        assert (limits.streams, limits.registrations_per_minute) == (0, 10)  # applied at once

        await _set_limits(service, tenant_id)  # nothing of its own: the deployment's again
        shown = await service.admin.GetTenantLimits(get, metadata=OPERATOR)
        assert (shown.streams, shown.registrations_per_minute, list(shown.own_fields)) == (7, 6000, [])

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _set_limits(service, tenant_id, streams=-1, rpcs_per_second=-2)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error_details(refused.value)[1].field_violations] == ["streams", "rpcs_per_second"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await _set_limits(service, str(uuid.uuid4()), streams=1)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unnamed:
            await service.admin.GetTenantLimits(admin_service_pb2.GetTenantLimitsRequest(), metadata=OPERATOR)
        assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
