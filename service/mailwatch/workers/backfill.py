"""The backfill worker: claims due backfills and runs each (`sync.backfill`) while keeping its lease.

It runs where the sync worker runs (MAILWATCH_SYNC_ENABLED) and shares the
sync's lease length, so a killed replica's backfill is taken over by another
(or by itself after a restart) once the lease lapses; what was committed
stays committed (the pointer moves with the events), nothing is delivered
twice. Backfills are few and long, so a handful run at once per replica;
their Gmail calls share the tenant's budget and the per-user in-flight
slots with the syncs (`GmailClient`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from prometheus_client import Counter, Histogram

from mailwatch.config import SyncSettings
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.store import backfills
from mailwatch.sync.backfill import MailboxBackfill
from mailwatch.workers.claiming import ClaimingWorker
from mailwatch.workers.sync import default_owner

BACKFILL_OUTCOMES = Counter("mailwatch_backfills_total", "Backfill claims worked, by outcome", ["outcome"])
BACKFILL_SECONDS = Histogram("mailwatch_backfill_seconds", "Time one backfill claim was worked")

log = logging.getLogger(__name__)

#: Backfills worked at once per replica.
BACKFILL_CONCURRENCY = 4
#: Gmail's quota units a minute per user for projects created since May 2026 (older ones keep 15,000).
GMAIL_USER_UNITS_PER_MINUTE = 6_000


def pace_warning(settings: SyncSettings) -> str | None:
    """What is wrong with a backfill pace that leaves the mailbox's live sync no room in Gmail's
    per-user minute (the live sync's calls count against the same user), or None."""
    pace = settings.backfill_units_per_minute
    if pace < GMAIL_USER_UNITS_PER_MINUTE:
        return None
    return (f"{settings.env_name('backfill_units_per_minute')}={pace} lets one mailbox's backfill spend Gmail's "
            f"whole {GMAIL_USER_UNITS_PER_MINUTE:,} quota units a minute per user (projects created since May "
            f"2026) or more: Gmail then refuses that mailbox's live sync too (429 userRateLimitExceeded) until "
            f"the minute is over. Set it below {GMAIL_USER_UNITS_PER_MINUTE:,} (default 3,000), unless the "
            f"Google project still has the older 15,000 a minute")


class BackfillWorker(ClaimingWorker[backfills.ClaimedBackfill]):
    outcomes = BACKFILL_OUTCOMES
    seconds = BACKFILL_SECONDS
    default_backoff = BackoffPolicy()
    pipelined = True  # a backfill waiting for the sync comes back in a second: claim into free slots

    def __init__(
        self,
        *,
        settings: SyncSettings = SyncSettings(),
        owner: str | None = None,
        loop_seconds: float = 0.5,
        concurrency: int = BACKFILL_CONCURRENCY,
        **common,  # ClaimingWorker's: sessions, gmail, secret_box, clock, backoff
    ) -> None:
        super().__init__(enabled=settings.enabled, loop_seconds=loop_seconds, batch_size=concurrency,
                         concurrency=concurrency, lease_seconds=settings.lease_seconds, **common)
        warning = pace_warning(settings) if settings.enabled else None
        if warning:
            log.warning(warning)
        self.owner = owner or default_owner()
        self.mailbox_backfill = MailboxBackfill(
            sessions=self.sessions, gmail=self.gmail, secret_box=self.secret_box, clock=self.clock,
            owner=self.owner, backoff=self.backoff, units_per_minute=settings.backfill_units_per_minute,
        )

    async def claim(self, now: datetime, limit: int) -> list[backfills.ClaimedBackfill]:
        return await backfills.claim_backfills(self.sessions, owner=self.owner, now=now, lease=self.lease,
                                               limit=limit, skip_tenants=self.gmail.budgets.deferred())

    async def process(self, claim: backfills.ClaimedBackfill) -> str:
        async with self.leased(lambda: backfills.extend_lease(
            self.sessions, claim.job, owner=self.owner, now=self.clock.now(), lease=self.lease,
        ), what=f"the backfill of mailbox {claim.mailbox.id}"):
            return await self.mailbox_backfill.run(claim)
