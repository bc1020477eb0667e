"""The sync worker: claims due mailboxes and syncs each (`sync.mailbox`) while keeping its lease.

The claim leases a mailbox to this process (`store.sync_claims`); while its
sync runs, a heartbeat extends the lease so a long sync or resync is not
taken over by another replica. What the sync does is `sync.mailbox.MailboxSync`.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime

from prometheus_client import Counter, Histogram

from mailwatch import stages
from mailwatch.config import SyncSettings
from mailwatch.store import sync_claims
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.sync.mailbox import CATCH_UP_ATTEMPTS, CATCH_UP_BACKOFF, POISON_AFTER, MailboxSync
from mailwatch.workers.claiming import ClaimingWorker

SYNC_OUTCOMES = Counter("mailwatch_syncs_total", "Mailbox syncs by outcome", ["outcome"])
SYNC_SECONDS = Histogram("mailwatch_sync_seconds", "Time to sync one mailbox")


def default_owner() -> str:
    """A lease owner name unique to this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SyncWorker(ClaimingWorker[sync_claims.ClaimedMailbox]):
    outcomes = SYNC_OUTCOMES
    seconds = SYNC_SECONDS
    default_backoff = BackoffPolicy()
    pipelined = True  # a notification is claimed as soon as a slot is free (see workers.claiming)

    def __init__(
        self,
        *,
        settings: SyncSettings = SyncSettings(),
        owner: str | None = None,
        loop_seconds: float = 0.5,
        batch_size: int = 50,
        catch_up_backoff: BackoffPolicy = CATCH_UP_BACKOFF,
        catch_up_attempts: int = CATCH_UP_ATTEMPTS,
        poison_after: int = POISON_AFTER,
        **common,  # ClaimingWorker's: sessions, gmail, secret_box, clock, backoff
    ) -> None:
        super().__init__(enabled=settings.enabled, loop_seconds=loop_seconds, batch_size=batch_size,
                         concurrency=settings.concurrency, lease_seconds=settings.lease_seconds, **common)
        self.owner = owner or default_owner()
        self.mailbox_sync = MailboxSync(
            sessions=self.sessions, gmail=self.gmail, secret_box=self.secret_box, clock=self.clock,
            owner=self.owner, lease=self.lease, backoff=self.backoff, catch_up_backoff=catch_up_backoff,
            catch_up_attempts=catch_up_attempts, poison_after=poison_after,
        )

    async def claim(self, now: datetime, limit: int) -> list[sync_claims.ClaimedMailbox]:
        """Lease due mailboxes to this worker's owner name, none of a tenant past its Gmail quota
        budget (its syncs would only wait for it, holding slots other tenants can use)."""
        claims = await sync_claims.claim_syncs(self.sessions, owner=self.owner, now=now, lease=self.lease,
                                               limit=limit, skip_tenants=self.gmail.budgets.deferred(),
                                               running=self.running_tenants())
        for claim in claims:
            if claim.mailbox.sync_due_at is not None:
                stages.observe(stages.DUE_TO_CLAIMED, (now - claim.mailbox.sync_due_at).total_seconds())
        return claims

    def tenant_of(self, claim: sync_claims.ClaimedMailbox) -> uuid.UUID:
        return claim.mailbox.tenant_id

    async def process(self, claim: sync_claims.ClaimedMailbox) -> str:
        started = time.perf_counter()
        try:
            async with self.leased(lambda: sync_claims.extend_lease(
                self.sessions, claim.mailbox.id, owner=self.owner, now=self.clock.now(), lease=self.lease,
            ), what=f"mailbox {claim.mailbox.id}"):
                return await self.mailbox_sync.run(claim)
        finally:
            stages.observe(stages.CLAIMED_TO_COMMITTED, time.perf_counter() - started)
