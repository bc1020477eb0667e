"""Token buckets of tenants' limits in Postgres, shared by every replica (`usage_buckets`).

`take` is ONE statement in autocommit: refill the bucket by the time passed
since it was last taken from (Postgres's clock, so the replicas' clocks do
not matter), take `amount` if that many tokens are there
(or, when asked, as many as there are above a minimum) and return what it
took and the tokens left. A new bucket starts full.
`refilled` is the refill, shared with the Gmail budgets' buckets
(store/gmail_budgets.py). `prune_idle` deletes buckets nobody took from for a
long time (a revoked API key's, a quiet tenant's): such a bucket is full, and a
missing bucket starts full, so deleting it changes no answer.
"""

from __future__ import annotations

import uuid

from datetime import timedelta

from sqlalchemy import Table, case, delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.elements import ColumnElement

from mailwatch.store.db import Sessions, autocommit
from mailwatch.store.models import usage_buckets

_buckets = usage_buckets


def refilled(table: Table, per_second: float, capacity: float) -> ColumnElement:
    """The tokens of `table`'s row as of now: its `tokens` plus `per_second` for every second
    since `updated`, at most `capacity`. Statements racing for the row see each other's
    `updated` in any order: a refill never runs backwards (GREATEST 0)."""
    elapsed = func.greatest(0.0, func.extract("epoch", func.now() - table.c.updated))
    return func.least(capacity, table.c.tokens + elapsed * per_second)


async def take(sessions: Sessions, tenant_id: uuid.UUID, bucket: str, amount: int, per_second: float,
               capacity: float, *, minimum: int | None = None) -> tuple[int, float]:
    """Take `amount` tokens from the tenant's `bucket` (refilled at `per_second`, at most
    `capacity`, which must be at least `amount`); with fewer there, as many whole tokens as are
    there if that is at least `minimum` (default: all or nothing). (tokens taken, 0 for
    none; the tokens left after)."""
    minimum = amount if minimum is None else minimum
    now_held = refilled(_buckets, per_second, capacity)
    taken = case((now_held >= amount, float(amount)), (now_held >= minimum, func.floor(now_held)), else_=0.0)
    statement = insert(_buckets).values(
        tenant_id=tenant_id, bucket=bucket, tokens=capacity - amount, taken=amount, updated=func.now(),
    ).on_conflict_do_update(
        index_elements=[_buckets.c.tenant_id, _buckets.c.bucket],
        set_={
            # A refusal takes nothing; the refill up to now is kept either way.
            "tokens": now_held - taken,
            "taken": taken,
            "updated": func.greatest(_buckets.c.updated, func.now()),
        },
    ).returning(_buckets.c.taken, _buckets.c.tokens)
    async with autocommit(sessions) as session:
        taken, tokens = (await session.execute(statement)).one()
    return int(taken), float(tokens)


async def prune_idle(sessions: Sessions, *, idle_for: timedelta) -> int:
    """Delete the buckets last taken from more than `idle_for` ago (by Postgres's clock); how
    many. `idle_for` must exceed the time any bucket takes to refill from empty (the service's
    refill in at most a minute: an API key's calls in one second, registrations in sixty)."""
    async with autocommit(sessions) as session:
        result = await session.execute(delete(_buckets).where(_buckets.c.updated < func.now() - idle_for))
    return result.rowcount
