"""TenantBudgets: each tenant's token bucket of Gmail quota units (the clock is a test's own)."""

from __future__ import annotations

import uuid

import pytest

from mailwatch.gmail.budget import BUDGET, DEFERRED_CALLS, TenantBudgets
from mailwatch.gmail.quota import tenant_label


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _deferred(tenant: uuid.UUID) -> float:
    return DEFERRED_CALLS.labels(tenant=tenant_label(tenant))._value.get()


async def test_a_tenant_spends_its_burst_at_once_then_waits_while_others_do_not():
    clock = Clock()
    # 60,000 units a minute = 1,000 a second; 10 s of burst = 10,000 units = 100 watches.
    budgets = TenantBudgets(60_000, clock=clock)
    busy, quiet = uuid.uuid4(), uuid.uuid4()
    for _ in range(100):
        await budgets.spend(busy, "watch")
    assert _deferred(busy) == 0 and budgets.deferred() == []

    await budgets.spend(busy, "watch")  # 100 units short: 0.1 s at 1,000 a second

    assert _deferred(busy) == 1
    assert budgets.deferred() == [busy]  # the clock did not move: still in debt
    await budgets.spend(quiet, "history.list")
    assert _deferred(quiet) == 0
    assert BUDGET.labels(tenant=tenant_label(busy))._value.get() == 60_000

    clock.now += 0.1  # the debt is repaid
    assert budgets.deferred() == []


async def test_a_tenants_own_budget_overrides_the_deployments_and_zero_means_none():
    own = {}
    budgets = TenantBudgets(60_000, clock=Clock(), override=lambda tenant: _value(own.get(tenant)))
    unlimited, small = uuid.uuid4(), uuid.uuid4()
    own[unlimited], own[small] = 0, 6_000
    for _ in range(500):
        await budgets.spend(unlimited, "watch")
    assert _deferred(unlimited) == 0 and await budgets.units_per_minute(unlimited) == 0
    assert await budgets.units_per_minute(small) == 6_000
    assert await budgets.units_per_minute(uuid.uuid4()) == 60_000  # no override: the deployment's


async def _value(value):
    return value


async def test_calls_that_cost_nothing_or_belong_to_no_tenant_are_not_metered():
    budgets = TenantBudgets(600, clock=Clock())
    tenant = uuid.uuid4()
    for _ in range(1000):
        await budgets.spend(tenant, "oauth2.token")
        await budgets.spend(None, "watch")
    assert budgets.deferred() == []


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError):
        TenantBudgets(-1)
