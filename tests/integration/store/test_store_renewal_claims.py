"""The renewal claim gives tenants turns: one tenant's flood of due renewals does not hold back another's."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from mailwatch.store import renewal_claims
from tests.fixtures.factory import Rows, fake_sealed_credential

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=60)
FLOOD = 5_000
BATCH = 100


async def _flood(sessions, tenant_id, count: int) -> None:
    """`count` ACTIVE mailboxes of the tenant, all due for renewal an hour ago (earlier than anyone else's)."""
    async with sessions() as session, session.begin():
        sealed = await fake_sealed_credential(session, tenant_id)
        await session.execute(text(
            "INSERT INTO mailboxes (tenant_id, email_address, gmail_address, state, credential_kind, "
            "sealed_credential_id, history_id, next_renewal_at) "
            "SELECT :tenant, 'flood' || n || '@renew.test', 'flood' || n || '@renew.test', 'ACTIVE', 'OAUTH', "
            ":sealed, 100, :due - n * interval '1 millisecond' FROM generate_series(1, :count) AS n"),
            {"tenant": tenant_id, "due": NOW - timedelta(hours=1), "count": count, "sealed": sealed})


async def _due(sessions, address: str, at: datetime) -> None:
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET next_renewal_at = :at WHERE email_address = :address"),
                              {"at": at, "address": address})


async def test_a_tenant_with_a_few_due_renewals_is_claimed_in_the_first_batch_beside_one_with_thousands(sessions):
    rows = Rows(sessions)
    flooding, steady = await rows.tenant(), await rows.tenant()
    await _flood(sessions, flooding.id, FLOOD)
    few = [f"steady{n}@renew.test" for n in range(3)]
    for address in few:
        await rows.mailbox(steady.id, address, history_id=100)
        await _due(sessions, address, NOW - timedelta(seconds=1))  # due after every one of the flood

    first = await renewal_claims.claim_renewals(sessions, now=NOW, lease=LEASE, limit=BATCH)

    assert len(first) == BATCH
    assert sorted(c.mailbox.email_address for c in first if c.mailbox.tenant_id == steady.id) == few
    # The rest of the batch is the flooding tenant's earliest due, in due order.
    flood_claimed = [c for c in first if c.mailbox.tenant_id == flooding.id]
    assert len(flood_claimed) == BATCH - len(few)
    assert {c.mailbox.email_address for c in flood_claimed} == {
        f"flood{n}@renew.test" for n in range(FLOOD, FLOOD - len(flood_claimed), -1)}
    # Claimed rows are due again only after the lease: the next batch is the flood's next ones.
    second = await renewal_claims.claim_renewals(sessions, now=NOW, lease=LEASE, limit=BATCH)
    assert len(second) == BATCH and {c.mailbox.tenant_id for c in second} == {flooding.id}


async def test_the_claim_leaves_the_renewals_of_tenants_past_their_gmail_budget_due(sessions):
    rows = Rows(sessions)
    over, within = await rows.tenant(), await rows.tenant()
    await rows.mailbox(over.id, "over@renew-budget.test", history_id=100)
    await rows.mailbox(within.id, "within@renew-budget.test", history_id=100)
    for address in ("over@renew-budget.test", "within@renew-budget.test"):
        await _due(sessions, address, NOW - timedelta(minutes=1))

    claimed = await renewal_claims.claim_renewals(sessions, now=NOW, lease=LEASE, limit=10, skip_tenants=[over.id])
    assert [c.mailbox.email_address for c in claimed] == ["within@renew-budget.test"]
    # Its turn comes once the tenant is no longer skipped; its due time was kept.
    later = await renewal_claims.claim_renewals(sessions, now=NOW, lease=LEASE, limit=10)
    assert [c.mailbox.email_address for c in later] == ["over@renew-budget.test"]
    assert later[0].claimed_until == NOW + LEASE
