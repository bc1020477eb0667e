"""A tenant's stream limit across replicas when one of them is SIGKILLed.

A `mailwatch serve` process (the victim) holds the tenant's only stream; an
in-process replica on the same Postgres refuses the tenant a second one while
the victim keeps renewing its lease. The victim is killed without closing
anything: its stream stops counting once its lease lapses, and the survivor
then accepts the tenant's stream (usage_limits.py, store/stream_leases.py).
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from mailwatch.store import stream_leases
from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2, mailbox_service_pb2_grpc
from tests.fixtures.processes import ServiceProcess
from tests.fixtures.rpc import error_details
from tests.fixtures.service import OPERATOR_TOKEN, service_settings
from tests.fixtures.waiting import eventually, stays

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 4.0  # renewed every third of it
OPERATOR = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
REQUEST = mailbox_service_pb2.StreamChangesRequest()


async def test_a_sigkilled_replicas_streams_stop_counting_once_their_leases_lapse(
    make_service, database_url, gmail_sim, pubsub_topic
):
    env = service_settings(database_url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"],
                           limits_stream_lease_seconds=LEASE_SECONDS, grace_seconds=1.0).environment()
    victim = ServiceProcess(env).start()
    try:
        async with make_service(limits_stream_lease_seconds=LEASE_SECONDS) as survivor, \
                grpc.aio.insecure_channel(victim.target) as victim_channel:
            tenant_id, auth = await survivor.new_tenant()
            tenant = uuid.UUID(tenant_id)
            await survivor.admin.SetTenantLimits(admin_service_pb2.SetTenantLimitsRequest(
                tenant_id=tenant_id, streams=1), metadata=OPERATOR)

            async def held() -> int:
                return await stream_leases.held(survivor.app.sessions, tenant)

            on_victim = mailbox_service_pb2_grpc.MailboxServiceStub(victim_channel).StreamChanges(
                REQUEST, metadata=auth)
            await eventually(lambda: _equals(held(), 1), what="the victim's stream leased")
            # The victim renews its lease: it outlives its first term.
            await stays(lambda: _equals(held(), 1), LEASE_SECONDS * 1.5, what="the victim's lease renewed")
            refused = await _open_on(survivor, auth, tenant)
            assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            assert error_details(refused)[0].reason == "TENANT_STREAM_LIMIT"

            victim.kill()
            killed_at = time.monotonic()

            async def survivor_accepts() -> bool:
                error = await _open_on(survivor, auth, tenant)
                if error is None:
                    return True
                assert error_details(error)[0].reason == "TENANT_STREAM_LIMIT", error
                return False

            await eventually(survivor_accepts, timeout=LEASE_SECONDS + 30, interval=0.2,
                             what="the survivor accepting the tenant's stream")
            freed_after = time.monotonic() - killed_at
            # The lease lapses at most LEASE_SECONDS after the victim's last renewal (before the
            # kill); the rest is this machine's pace in trying again.
            assert freed_after <= LEASE_SECONDS + 10, freed_after
            assert await held() == 1  # the survivor's own; the victim's lapsed lease is gone
            on_victim.cancel()
    finally:
        victim.kill()


async def _equals(value, expected: int) -> bool:
    return await value == expected


async def _open_on(service, auth, tenant: uuid.UUID) -> grpc.aio.AioRpcError | None:
    """Open a stream of `tenant` on `service`: None once it is open there (left open), else its refusal."""
    open_before = service.app.usage_limits.open_streams(tenant)
    call = service.mailboxes.StreamChanges(REQUEST, metadata=auth)
    await eventually(lambda: call.done() or service.app.usage_limits.open_streams(tenant) > open_before,
                     what="the stream opened or refused")
    if not call.done():
        return None
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the stream ended without an error")
