"""Fleet-wide mailbox figures for operators' gauges (one aggregate statement)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import MailboxState
from mailwatch.store.db import Sessions, reading

# One pass over mailboxes grouped by state; cost grows with the number of
# mailboxes, which is why callers cache the result between scrapes.
_SUMMARY = text(
    """
    SELECT state,
           count(*) AS mailboxes,
           count(*) FILTER (WHERE sync_due_at <= :now) AS sync_due,
           min(sync_due_at) FILTER (WHERE sync_due_at <= :now) AS oldest_sync_due,
           min(watch_expiration) AS soonest_watch_expiration
      FROM mailboxes
  GROUP BY state
    """
)


@dataclass(frozen=True)
class FleetSummary:
    mailboxes_by_state: dict[str, int] = field(default_factory=dict)
    sync_due: int = 0  # ACTIVE mailboxes whose sync is due now (backlog)
    oldest_sync_due: datetime | None = None  # the longest-waiting due ACTIVE mailbox
    soonest_watch_expiration: datetime | None = None  # among ACTIVE mailboxes


async def fleet_summary(session: AsyncSession, now: datetime) -> FleetSummary:
    rows = (await session.execute(_SUMMARY, {"now": now})).all()
    by_state = {state.value: 0 for state in MailboxState}
    summary = {"sync_due": 0, "oldest_sync_due": None, "soonest_watch_expiration": None}
    for row in rows:
        by_state[row.state] = row.mailboxes
        if row.state == MailboxState.ACTIVE.value:
            summary = {
                "sync_due": row.sync_due,
                "oldest_sync_due": row.oldest_sync_due,
                "soonest_watch_expiration": row.soonest_watch_expiration,
            }
    return FleetSummary(mailboxes_by_state=by_state, **summary)


async def summary(sessions: Sessions, now: datetime) -> FleetSummary:
    """`fleet_summary` in a session of its own."""
    async with reading(sessions) as session:
        return await fleet_summary(session, now)
