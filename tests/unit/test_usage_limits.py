"""usage_limits: the token buckets' arithmetic and the stream count, on a fake clock (no waiting)."""

from __future__ import annotations

import uuid

import pytest

from mailwatch.config import LimitSettings
from mailwatch.domain.errors import (
    RegistrationBatchOverLimit,
    RegistrationRateLimited,
    RpcRateLimited,
    TenantStreamLimit,
)
from mailwatch.domain.models import TenantLimits
from mailwatch.usage_limits import (
    REFUSALS,
    STREAM_RETRY_SECONDS,
    LocalCounts,
    TokenBucket,
    UsageLimits,
    grant_size,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(own: dict[uuid.UUID, TenantLimits] | None = None, **defaults) -> tuple[UsageLimits, Clock]:
    clock = Clock()

    async def lookup(tenant_id: uuid.UUID) -> TenantLimits:
        return (own or {}).get(tenant_id, TenantLimits())

    return UsageLimits(LimitSettings(**defaults), lookup, clock=clock), clock


def test_a_bucket_takes_all_or_nothing_and_says_when_the_amount_is_back():
    bucket = TokenBucket.full(per_second=2.0, capacity=4.0, now=0.0)
    assert bucket.take(4, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(0.5)
    assert bucket.take(3, 0.25) == pytest.approx(1.25)  # 0.5 back, 2.5 missing at 2 a second
    assert bucket.tokens == pytest.approx(0.5)  # nothing taken by a refusal
    assert bucket.take(3, 1.5) == 0.0
    assert bucket.take(1, 100.0) == 0.0 and bucket.tokens == pytest.approx(3.0)  # never above capacity


async def test_a_keys_calls_are_refused_past_its_rate_with_the_wait_and_other_keys_go_on():
    tenant = uuid.uuid4()
    limits, clock = _limits(rpcs_per_second_per_key=2)
    for _ in range(2):
        await limits.take_call(tenant, b"key-a")
    before = REFUSALS.labels(reason="RPC_RATE_LIMITED", tenant=str(tenant))._value.get()
    with pytest.raises(RpcRateLimited) as refused:
        await limits.take_call(tenant, b"key-a")
    assert refused.value.retry_after == pytest.approx(0.5)
    assert refused.value.metadata == {"limit": "2"}
    assert REFUSALS.labels(reason="RPC_RATE_LIMITED", tenant=str(tenant))._value.get() == before + 1
    await limits.take_call(tenant, b"key-b")  # each key its own bucket
    clock.now += 0.5
    await limits.take_call(tenant, b"key-a")


async def test_a_tenants_own_limits_win_and_zero_means_none():
    own, default = uuid.uuid4(), uuid.uuid4()
    limits, _ = _limits({own: TenantLimits(rpcs_per_second=0, registrations_per_minute=2)},
                        rpcs_per_second_per_key=1, registrations_per_minute_per_tenant=100)
    for _ in range(50):
        await limits.take_call(own, b"own-key")
    await limits.take_call(default, b"default-key")
    with pytest.raises(RpcRateLimited):
        await limits.take_call(default, b"default-key")

    await limits.take_registrations(own, 2)
    with pytest.raises(RegistrationRateLimited) as refused:
        await limits.take_registrations(own, 1)
    assert refused.value.retry_after == pytest.approx(30.0)  # 2 a minute: one back in 30 s
    with pytest.raises(RegistrationBatchOverLimit):
        await limits.take_registrations(own, 3)
    await limits.take_registrations(default, 100)


async def test_a_tenants_own_limits_are_cached_until_forgotten():
    tenant = uuid.uuid4()
    own = {tenant: TenantLimits(streams=1)}
    limits, _ = _limits(own)
    assert (await limits.limits_of(tenant)).streams == 1
    own[tenant] = TenantLimits(streams=5)
    assert (await limits.limits_of(tenant)).streams == 1
    limits.forget(tenant)
    assert (await limits.limits_of(tenant)).streams == 5


async def test_streams_hold_a_slot_each_until_they_end():
    tenant, other = uuid.uuid4(), uuid.uuid4()
    limits, _ = _limits(streams_per_tenant=2)
    async with limits.stream_slot(tenant), limits.stream_slot(tenant):
        with pytest.raises(TenantStreamLimit) as refused:
            async with limits.stream_slot(tenant):
                pass
        assert refused.value.retry_after == STREAM_RETRY_SECONDS
        async with limits.stream_slot(other):
            assert (limits.open_streams(tenant), limits.open_streams(other)) == (2, 1)
    assert limits.open_streams(tenant) == 0
    async with limits.stream_slot(tenant):
        assert limits.open_streams(tenant) == 1


async def test_streams_opened_with_no_limit_count_against_a_limit_set_later():
    tenant = uuid.uuid4()
    own = {tenant: TenantLimits(streams=0)}
    limits, _ = _limits(own, streams_per_tenant=5)
    async with limits.stream_slot(tenant), limits.stream_slot(tenant), limits.stream_slot(tenant):
        own[tenant] = TenantLimits(streams=1)  # the operator's SetTenantLimits
        limits.forget(tenant)
        with pytest.raises(TenantStreamLimit):
            async with limits.stream_slot(tenant):
                pass
    async with limits.stream_slot(tenant):  # all three closed: the one slot is free
        assert limits.open_streams(tenant) == 1


class CountedTakes(LocalCounts):
    """LocalCounts that records each take from a bucket (what would be a statement in Postgres)."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.takes: list[tuple[int, int]] = []  # (asked, taken)

    async def take(self, tenant_id, bucket, amount, per_second, capacity, *, minimum=None):
        taken, left = await super().take(tenant_id, bucket, amount, per_second, capacity, minimum=minimum)
        self.takes.append((amount, taken))
        return taken, left


def test_a_grant_is_a_tenth_of_a_second_of_calls_and_at_least_one():
    assert [grant_size(rate) for rate in (1, 10, 11, 20, 200, 205)] == [1, 1, 2, 2, 20, 21]


async def test_calls_are_taken_from_the_shared_bucket_in_grants_and_a_refusal_costs_no_take_until_due():
    tenant = uuid.uuid4()
    clock = Clock()
    counts = CountedTakes(clock)
    limits = UsageLimits(LimitSettings(rpcs_per_second_per_key=40), counts=counts, clock=clock)
    for _ in range(40):  # the bucket's 40 at once, taken 4 at a time
        await limits.take_call(tenant, b"key")
    assert counts.takes == [(4, 4)] * 10
    with pytest.raises(RpcRateLimited) as refused:
        await limits.take_call(tenant, b"key")
    assert refused.value.retry_after == pytest.approx(1 / 40)  # one call's worth
    assert counts.takes[-1] == (4, 0)
    clock.now += 1 / 128  # steps a float holds exactly
    for _ in range(5):  # before the RetryInfo is due: refused here, no take
        with pytest.raises(RpcRateLimited) as again:
            await limits.take_call(tenant, b"key")
        assert again.value.retry_after == pytest.approx(1 / 40 - 1 / 128)
    assert len(counts.takes) == 11
    clock.now += 1 / 16 - 1 / 128  # 2.5 calls back since the refusal: fewer than a grant, the 2 whole ones taken
    await limits.take_call(tenant, b"key")
    await limits.take_call(tenant, b"key")
    assert counts.takes[-1] == (4, 2)
