"""Both client twins honour the server's RetryInfo: a call refused for the key's rate
(RESOURCE_EXHAUSTED, RPC_RATE_LIMITED) is retried after the server's delay, not the policy's.

The policy allows one retry, 1 ms after the refusal: a retry that soon would be
refused again (the key's one call a second is not back) and end the call with
RateLimitedError. Every call succeeding, with refusals counted on the server,
shows each retry waited for the delay the server named.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from mailwatch.gmail.quota import tenant_label
from mailwatch.usage_limits import REFUSALS, STREAM_RETRY_SECONDS
from mailwatch_client import AsyncMailwatchClient, MailwatchClient, RetryConfig
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of

pytestmark = pytest.mark.integration

ONE_QUICK_RETRY = RetryConfig(initial_backoff=0.001, max_backoff=0.001, jitter=0, max_attempts=2)


async def _one_call_a_second(service) -> tuple[str, str]:
    """A fresh tenant whose own limit is one call a second for each key, set through the client's admin calls."""
    tenant_id, auth = await service.new_tenant()
    async with AsyncMailwatchClient(service.target, operator_token=OPERATOR_TOKEN) as admin:
        limits = await admin.set_tenant_limits(tenant_id=tenant_id, rpcs_per_second=1)
        assert (limits.rpcs_per_second, list(limits.own_fields)) == (1, ["rpcs_per_second"])
        assert (await admin.get_tenant_limits(tenant_id=tenant_id)).rpcs_per_second == 1
    return tenant_id, api_key_of(auth)


def _refusals(tenant_id: str) -> float:
    return REFUSALS.labels(reason="RPC_RATE_LIMITED", tenant=tenant_label(uuid.UUID(tenant_id)))._value.get()


async def test_the_async_client_retries_a_rate_limited_call_after_the_servers_delay(service):
    tenant_id, key = await _one_call_a_second(service)
    before = _refusals(tenant_id)
    async with AsyncMailwatchClient(service.target, key, retry=ONE_QUICK_RETRY) as client:
        # Calls back to back: the key's second call within a second is refused and retried.
        for _ in range(10):
            await client.list_mailboxes()
            if _refusals(tenant_id) > before:
                break
        assert _refusals(tenant_id) > before, "no call was refused: the retry path was not taken"
        await client.list_mailboxes()


async def test_the_blocking_client_retries_a_rate_limited_call_after_the_servers_delay(service):
    tenant_id, key = await _one_call_a_second(service)
    before = _refusals(tenant_id)

    def calls() -> None:
        with MailwatchClient(service.target, key, retry=ONE_QUICK_RETRY) as client:
            for _ in range(10):
                client.list_mailboxes()
                if _refusals(tenant_id) > before:
                    break
            client.list_mailboxes()

    await asyncio.to_thread(calls)
    assert _refusals(tenant_id) > before, "no call was refused: the retry path was not taken"


async def test_a_stream_refused_for_the_tenants_stream_limit_reopens_after_the_servers_delay_only(service):
    tenant_id, auth = await service.new_tenant()
    key = api_key_of(auth)
    async with AsyncMailwatchClient(service.target, operator_token=OPERATOR_TOKEN) as admin:
        await admin.set_tenant_limits(tenant_id=tenant_id, streams=1)
    limits = service.app.usage_limits
    tenant = uuid.UUID(tenant_id)

    def refusals() -> float:
        return REFUSALS.labels(reason="TENANT_STREAM_LIMIT", tenant=tenant_label(tenant))._value.get()

    before = refusals()
    # A reconnect policy of 10 ms: only the server's RetryInfo (5 s) keeps the second stream from
    # coming back a hundred times a second while the first holds the tenant's one slot.
    eager = RetryConfig(initial_backoff=0.01, max_backoff=0.01, jitter=0, max_attempts=0)
    async with AsyncMailwatchClient(service.target, key) as client:
        holder = client.stream_changes(idle_timeout=None)
        holding = asyncio.create_task(anext(holder))
        await eventually(lambda: limits.open_streams(tenant) == 1, what="the first stream open")

        # From the earliest: the tenant has no events before the test event below.
        waiting = client.stream_changes(start="earliest", idle_timeout=None, retry=eager)
        received = asyncio.create_task(anext(waiting))
        await eventually(lambda: refusals() >= before + 1, what="the second stream refused")
        first_refusal = time.monotonic()
        await eventually(lambda: refusals() >= before + 2, timeout=60, what="the second stream's retry")
        gap = time.monotonic() - first_refusal
        assert gap >= STREAM_RETRY_SECONDS - 0.5, f"reopened {gap:.2f} s after a refusal asking for 5 s"

        holding.cancel()
        await holder.aclose()
        await eventually(lambda: limits.open_streams(tenant) == 1, timeout=60, what="the second stream open")
        sent = await client.send_test_event(note="after the limit")
        event = await asyncio.wait_for(received, timeout=60)
        assert event.id == sent.id
        await waiting.aclose()
