"""A tenant's Gmail quota budget holds across replicas: two service instances on one database
register one tenant's mailboxes at once, and together spend no more than the one budget.

Budget 12,000 units a minute (200 a second; 2,000 at once, 10 s of burst).
Tenant A registers 60 mailboxes, 30 through each instance (101 units each:
getProfile + users.watch; 6,060 in all): held to one budget that takes 20 s
at least, where a budget per replica let each instance spend its 3,030 in
about 5 s. Tenant B registers meanwhile on the second instance and never
waits for a budget.

Asserted, whatever this machine's speed: A's units (the simulator's count,
syncs included) within the burst, the budget's rate over the time it ran,
and the stated tolerance of one grant (1 s of budget) and one call per
replica (gmail/budget.py); B's calls never deferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from google.rpc import code_pb2

from mailwatch.gmail.budget import DEFERRED_CALLS
from mailwatch.gmail.quota import UNITS, tenant_label
from mailwatch.v1 import mailbox_service_pb2

pytestmark = pytest.mark.integration

BUDGET = 12_000
RATE = BUDGET / 60
BURST = 10 * RATE
REPLICAS = 2
TOLERANCE = REPLICAS * (1 * RATE + UNITS["watch"])
PER_REPLICA = 30


def _batch(key: dict, addresses: list[str]) -> mailbox_service_pb2.BatchRegisterMailboxesRequest:
    return mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=addresses,
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    )


def _units(sim, addresses: list[str]) -> int:
    units = sim.counters()["quotaUnits"]
    return sum(units.get(address, 0) for address in addresses)


@pytest.mark.timeout(600)
async def test_two_replicas_hold_a_tenant_to_one_budget_while_another_tenant_is_not_deferred(make_service):
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(make_service(gmail_tenant_units_per_minute=BUDGET))
        second = await stack.enter_async_context(make_service(gmail_tenant_units_per_minute=BUDGET))
        sim = first.sim
        a_id, a_auth = await first.new_tenant()
        b_id, b_auth = await first.new_tenant()
        a_addresses = [f"replicated{n:03d}@domain.test" for n in range(REPLICAS * PER_REPLICA)]
        b_addresses = [f"other{n}@domain.test" for n in range(3)]
        sim.create_mailboxes(a_addresses + b_addresses)
        a_key, b_key = sim.create_service_account_key(), sim.create_service_account_key()
        b_deferred_before = DEFERRED_CALLS.labels(tenant=tenant_label(b_id))._value.get()

        started = time.monotonic()
        a_units_before = _units(sim, a_addresses)
        a_answers = [
            asyncio.ensure_future(service.mailboxes.BatchRegisterMailboxes(
                _batch(a_key, a_addresses[n * PER_REPLICA:(n + 1) * PER_REPLICA]), metadata=a_auth, timeout=500))
            for n, service in enumerate((first, second))
        ]
        b_answer = await second.mailboxes.BatchRegisterMailboxes(_batch(b_key, b_addresses), metadata=b_auth)
        answers = await asyncio.gather(*a_answers)
        elapsed = time.monotonic() - started
        a_units = _units(sim, a_addresses) - a_units_before

        results = [result for answer in answers for result in answer.results]
        assert [r.status.code for r in results] == [code_pb2.OK] * len(a_addresses)
        assert [r.status.code for r in b_answer.results] == [code_pb2.OK] * len(b_addresses)
        assert a_units >= len(a_addresses) * (UNITS["getProfile"] + UNITS["watch"])
        assert a_units <= BURST + RATE * elapsed + TOLERANCE, (a_units, elapsed)
        assert DEFERRED_CALLS.labels(tenant=tenant_label(b_id))._value.get() == b_deferred_before
        print(f"A: {len(a_addresses)} registrations through {REPLICAS} replicas in {elapsed:.1f} s, {a_units} units "
              f"(bound {BURST + RATE * elapsed + TOLERANCE:.0f})")
