"""A tenant's Gmail quota budget holds across replicas: two TenantBudgets, each with its own
engine (as two replicas have), take from the tenant's one bucket in Postgres."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from sqlalchemy import text

from mailwatch.gmail.budget import DEFERRED_CALLS, TenantBudgets
from mailwatch.gmail.quota import UNITS, tenant_label
from mailwatch.store import gmail_budgets
from tests.fixtures.factory import Rows

pytestmark = pytest.mark.integration

# Units a minute: 100 a second, 1,000 at once (10 s of burst), grants of 100 (one watch each,
# so each replica's every call takes from Postgres: the refill during the test's own
# statements stays small against what it spends even on a loaded machine).
BUDGET = 6_000
RATE = BUDGET / 60
BURST = 10 * RATE
GRANT = 1 * RATE
WATCHES = 8  # per replica, 100 units each: 1,600 units in all, 6 s of budget past the burst


def _deferred(tenant) -> float:
    return DEFERRED_CALLS.labels(tenant=tenant_label(tenant.id))._value.get()


async def test_two_replicas_spend_one_budget_while_another_tenant_is_not_held_back(sessions, other_sessions):
    rows = Rows(sessions)
    busy, quiet = await rows.tenant(), await rows.tenant()
    replicas = [TenantBudgets(BUDGET, shared=functools.partial(gmail_budgets.take_units, s))
                for s in (sessions, other_sessions)]
    quiet_before = _deferred(quiet)

    async def spend(budgets: TenantBudgets, tenant, calls: int) -> None:
        for _ in range(calls):
            await budgets.spend(tenant.id, "watch")

    started = time.monotonic()
    await asyncio.gather(*(spend(budgets, busy, WATCHES) for budgets in replicas),
                         spend(replicas[1], quiet, 5))  # 500 units: within the quiet tenant's burst
    elapsed = time.monotonic() - started

    # Each replica alone would have let its 800 units through at once (its own 1,000 burst);
    # one shared bucket holds the two to the budget: the burst, the budget's rate, and at most
    # one grant and one call per replica unspent (gmail/budget.py's stated tolerance).
    spent = 2 * WATCHES * UNITS["watch"]
    tolerance = 2 * (GRANT + UNITS["watch"])
    assert spent <= BURST + RATE * elapsed + tolerance, (spent, elapsed)
    assert _deferred(busy) > 0
    assert _deferred(quiet) == quiet_before
    async with sessions() as session:
        left = await session.scalar(text("SELECT tokens FROM gmail_budget_buckets WHERE tenant_id = :t"),
                                    {"t": busy.id})
    assert left < BURST - spent / 2  # both replicas took from the one row


async def test_the_shared_bucket_refills_by_postgres_time_up_to_its_capacity(sessions):
    tenant = await Rows(sessions).tenant()
    # 1 unit a second, at most 100: a new bucket starts full.
    assert await gmail_budgets.take_units(sessions, tenant.id, 150, 1.0, 100.0) == -50
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE gmail_budget_buckets SET updated = updated - interval '30 seconds'"))
    # 30 s at 1 a second repaid 30 of the 50 owed (plus the seconds the test itself took: under 10).
    left = await gmail_budgets.take_units(sessions, tenant.id, 0, 1.0, 100.0)
    assert -20 <= left < -10
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE gmail_budget_buckets SET updated = updated - interval '1 hour'"))
    assert await gmail_budgets.take_units(sessions, tenant.id, 0, 1.0, 100.0) == 100  # never past the capacity
