"""Each tenant's Gmail quota budget as one token bucket in Postgres, shared by every replica.

`take_units` is ONE statement in autocommit: refill the tenant's row by the
time passed since it was last taken from (Postgres's clock, so the replicas'
clocks do not matter), take the units, and return what is left (negative:
the tenant is in debt, the caller waits until it is repaid). Replicas take
grants of about a second of the budget (gmail/budget.py), so this runs at
most about once a second per busy tenant per replica, not once per call.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert

from mailwatch.store.db import Sessions, autocommit
from mailwatch.store.models import GmailBudgetBucketRow
from mailwatch.store.usage_buckets import refilled

_buckets = GmailBudgetBucketRow.__table__


async def take_units(sessions: Sessions, tenant_id: uuid.UUID, units: float, per_second: float,
                     capacity: float) -> float:
    """Take `units` from the tenant's bucket, refilled at `per_second` up to `capacity`
    (a new bucket starts full); the units left after (negative: in debt)."""
    # `updated` never moves back (statements racing for the row commit in any order).
    statement = insert(_buckets).values(tenant_id=tenant_id, tokens=capacity - units, updated=func.now())
    statement = statement.on_conflict_do_update(
        index_elements=[_buckets.c.tenant_id],
        set_={
            "tokens": refilled(_buckets, per_second, capacity) - units,
            "updated": func.greatest(_buckets.c.updated, func.now()),
        },
    ).returning(_buckets.c.tokens)
    async with autocommit(sessions) as session:
        return float((await session.execute(statement)).scalar_one())
