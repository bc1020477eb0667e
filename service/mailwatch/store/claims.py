"""What every worker's claim on `mailboxes` shares (sync, renewal, fallback poll).

A claim is one statement, `UPDATE … WHERE id = ANY(<due ids … FOR UPDATE SKIP
LOCKED>) RETURNING`, so replicas never claim the same mailbox. Here: the
claimed-ids expression, the ACTIVE literal the partial indexes need, the
Gmail retry-time guard, the failure columns every worker records, and the
fallback poll's own claim. The sync claim is in `sync_claims`, the renewal
claim in `renewal_claims`.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Integer, Uuid, all_, any_, bindparam, cast, func, literal_column, or_, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import MailboxState
from mailwatch.store.db import Sessions, transaction
from mailwatch.store.models import mailboxes, tenants

ERROR_TEXT_LIMIT = 500
FAILURE_COLUMNS = ("last_error", "last_error_reason", "last_error_at", "next_attempt_at")

# The state as a SQL literal, not a bound parameter: a prepared statement's
# generic plan can then still prove a partial index's `state = 'ACTIVE'`.
ACTIVE = literal_column(f"'{MailboxState.ACTIVE.value}'")


def claimed_ids(due):
    """`= ANY (CAST((SELECT array_agg(id) FROM (<due … FOR UPDATE SKIP LOCKED>)) AS uuid[]))`.

    With `id IN (<due>)` the planner may join the due rows back to the table
    with a hash join over a sequential scan of every mailbox whenever it
    overestimates how many are due (always, for a generic plan); an array of
    ids is an init-plan value that it looks up in the primary key.
    """
    locked = due.subquery("due")
    # The cast makes ANY take one array value rather than the rows of a subquery.
    return any_(cast(select(func.array_agg(locked.c.id)).scalar_subquery(), ARRAY(Uuid)))


def due_in_tenant_turns(is_due, due_at: str, *, limit, skip_tenants, running=None):
    """The ids of up to `limit` mailboxes `is_due(rows)` accepts, locked for the claim
    (`FOR UPDATE SKIP LOCKED`), tenants taking turns: each tenant's earliest due
    (by the column `due_at`) first, then each one's second, and so on (earliest
    first within a turn), so one tenant's thousands of due mailboxes do not make
    another's one wait behind them. Each tenant contributes at most `limit`
    candidates (its own index on `due_at`); tenants in `skip_tenants` (a uuid[]
    expression: those past their Gmail quota budget) none. `is_due` takes
    `mailboxes` or an alias of it and is checked again under the row lock.

    `running` (a uuid[] expression naming a tenant once per claim of it the worker
    is still processing) carries the turns over from one claim to the next: a
    tenant with k mailboxes in the worker's slots starts at turn k + 1. A worker
    that claims into its free slots as they free up claims one or two at a time
    once it is busy, and turns counted within such a claim alone give nothing:
    the flooding tenant's earliest due wins each one, and another tenant's newly
    due mailbox waits behind the whole flood (tests/integration/api/test_api_quota_fairness.py)."""
    candidates = mailboxes.alias("candidate")
    per_tenant = (
        select(candidates.c.id, candidates.c[due_at])
        .where(candidates.c.tenant_id == tenants.c.id, *is_due(candidates))
        .order_by(candidates.c[due_at])
        .limit(limit)
        .lateral("due")
    )
    turn = func.row_number().over(partition_by=tenants.c.id, order_by=per_tenant.c[due_at])
    if running is not None:
        turn = turn + func.cardinality(func.array_positions(running, tenants.c.id))
    turns = (
        select(per_tenant.c.id, per_tenant.c[due_at], turn.label("turn"))
        .select_from(tenants.join(per_tenant, true()))
        .where(tenants.c.id != all_(skip_tenants))
        .subquery("turns")
    )
    picked = select(turns.c.id).order_by(turns.c.turn, turns.c[due_at]).limit(limit)
    return (
        select(mailboxes.c.id)
        .where(mailboxes.c.id.in_(picked), *is_due(mailboxes))  # checked again under the row lock
        .with_for_update(skip_locked=True)
    )


def gmail_allows(now: datetime, rows=mailboxes):
    """No Gmail call for a mailbox before the retry time Gmail named (`gmail_retry_at`);
    `rows`: `mailboxes` or an alias of it."""
    return or_(rows.c.gmail_retry_at.is_(None), rows.c.gmail_retry_at <= now)


def gmail_retry_values(gmail_retry_at: datetime | None) -> dict:
    """Remember Gmail's retry time, keeping the later one (GREATEST ignores a NULL)."""
    if gmail_retry_at is None:
        return {}
    return {"gmail_retry_at": func.greatest(mailboxes.c.gmail_retry_at, gmail_retry_at)}


def failure_values(*, reason: str, message: str, at: datetime, next_attempt_at: datetime | None) -> dict:
    """The columns that record a failure (GetMailbox's last_error and next_attempt_time)."""
    return dict(
        last_error_reason=reason,
        last_error=message[:ERROR_TEXT_LIMIT],
        last_error_at=at,
        next_attempt_at=next_attempt_at,
    )


def terminal_values(*, state: MailboxState, reason: str, message: str, now: datetime) -> dict:
    """AUTH_FAILED / ACCESS_REFUSED, as sync and renewal both write them: no Gmail
    call (sync or retry) until the mailbox is registered again."""
    return dict(
        state=state.value,
        sync_due_at=None,
        backoff_until=None,
        **failure_values(reason=reason, message=message, at=now, next_attempt_at=None),
        updated=now,
    )


async def mark_quiet_mailboxes_due(session: AsyncSession, *, now: datetime, quiet_for: timedelta, limit: int) -> int:
    """Fallback poll: mark ACTIVE mailboxes not synced for `quiet_for` as due.

    Dropped or delayed notifications then cost latency, never data. Bounded
    by `limit` per call so a long outage does not become one huge update.
    """
    result = await session.execute(
        _mark_quiet_statement(), {"p_now": now, "p_cutoff": now - quiet_for, "p_limit": limit}
    )
    return result.rowcount


@functools.cache
def _mark_quiet_statement():
    """The poll's claim, built once (every tick runs it; building it was most of a
    tick's CPU): its values are bind parameters."""
    last = func.coalesce(mailboxes.c.last_sync_at, mailboxes.c.created)
    quiet = (
        select(mailboxes.c.id)
        .where(
            mailboxes.c.state == ACTIVE,
            mailboxes.c.sync_due_at.is_(None),
            last < bindparam("p_cutoff", type_=DateTime(timezone=True)),
        )
        .order_by(last)
        .limit(bindparam("p_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    # Served by ix_mailboxes_poll_due (the same coalesce, partial on the same
    # conditions): the scan reads the quiet mailboxes only.
    return (
        update(mailboxes)
        .where(mailboxes.c.id == claimed_ids(quiet))
        .values(sync_due_at=bindparam("p_now", type_=DateTime(timezone=True)))
    )


async def mark_quiet_due(sessions: Sessions, *, now: datetime, quiet_for: timedelta, limit: int) -> int:
    """`mark_quiet_mailboxes_due` as its own transaction."""
    async with transaction(sessions) as session:
        return await mark_quiet_mailboxes_due(session, now=now, quiet_for=quiet_for, limit=limit)
