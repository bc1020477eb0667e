"""The renew worker: re-calls `users.watch` about once a day per mailbox.

Each ACTIVE mailbox is due at its own slot of the day
(`lifecycle.schedule.next_renewal_at`), so renewals are spread evenly however
the mailboxes were registered, and always days before the 7-day expiration.
A renewal writes the new expiration, the next due time and WATCH_RENEWED in
one transaction, fenced on its claim (`store.renewal_claims`). A round's
claims (a batch, run `concurrency` at a time) are kept by a heartbeat, one
statement every third of the lease for those not finished, so a slow Gmail
or a tenant's budget in debt does not let another replica claim them too.

Failures (`domain.failures`, as for sync): revoked credentials → AUTH_FAILED,
refused access → ACCESS_REFUSED (the mailbox makes no Gmail call until
registered again); anything else → retry with jittered exponential backoff,
never before the retry time Gmail named and otherwise never later than the
moment the current watch expires. A watch that does lapse is reported
once with WATCH_EXPIRED; the mailbox keeps syncing meanwhile, because the
fallback poll only looks at the last sync time, and a renewal that succeeds
later says WATCH_RENEWED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram

from mailwatch.config import RenewSettings
from mailwatch.domain import errors
from mailwatch.domain.models import Credential, EventType, MailboxState, NewEvent
from mailwatch.domain.projects import topic_project, union_filter
from mailwatch.gmail.client import WatchResult
from mailwatch.lifecycle.schedule import next_renewal_at, renewal_key
from mailwatch.lifecycle.shared_watch import SHARED_WATCH_FRESH, watch_taking_over
from mailwatch.store import renewal_claims
from mailwatch.store.renewal_claims import ClaimedRenewal
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.workers.claiming import ClaimingWorker
from mailwatch.domain.failures import Failure, failure_of

log = logging.getLogger(__name__)

RENEW_OUTCOMES = Counter("mailwatch_renewals_total", "Watch renewals by outcome", ["outcome"])
WATCHES_EXPIRED = Counter("mailwatch_watches_expired_total", "Watches that lapsed before a renewal succeeded")
RENEW_SECONDS = Histogram("mailwatch_renew_seconds", "Time to renew one watch")

# A day between renewals leaves six days of retries before a watch lapses;
# an hour's cap keeps retrying often enough within them.
RENEW_BACKOFF = BackoffPolicy(base_seconds=60.0, max_seconds=3600.0)


@dataclass(eq=False)
class _Beat:
    """One heartbeat statement: the fences it moves on, to when (chosen before it is sent), and
    which it kept; `unanswered` when it raised, committed or not (e.g. its connection was lost)."""

    fences: dict[uuid.UUID, tuple[datetime, ...]]
    until: datetime
    kept: set[uuid.UUID] = field(default_factory=set)
    unanswered: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def fences_after(self, mailbox_id: uuid.UUID, before: tuple[datetime, ...]) -> tuple[datetime, ...]:
        """The values one claim's fence may have now that this beat is done."""
        if mailbox_id in self.kept:
            return (self.until,)
        if self.unanswered:  # it moved them to `until`, or it did not: either holds the claim
            return (*before, self.until)
        return before


class RenewWorker(ClaimingWorker[ClaimedRenewal]):
    outcomes = RENEW_OUTCOMES
    seconds = RENEW_SECONDS
    default_backoff = RENEW_BACKOFF

    def __init__(
        self,
        *,
        topic: str,
        settings: RenewSettings = RenewSettings(),
        batch_size: int = 100,
        concurrency: int = 8,
        **common,  # ClaimingWorker's: sessions, gmail, secret_box, clock, lease_seconds, backoff
    ) -> None:
        super().__init__(enabled=settings.enabled, loop_seconds=settings.loop_seconds, batch_size=batch_size,
                         concurrency=concurrency, **common)
        self.expiring_horizon = timedelta(hours=settings.watch_expiring_hours)
        self.topic = topic
        # The round's claims not finished: id -> the values its fence may have now (ClaimedRenewal.fences).
        self._fences: dict[uuid.UUID, tuple[datetime, ...]] = {}
        self._beat: _Beat | None = None  # the heartbeat statement on its way

    async def claim(self, now: datetime, limit: int) -> list[ClaimedRenewal]:
        """Claim due renewals, tenants taking turns: each is due again after the lease unless an
        outcome is written. Tenants past their Gmail quota budget are left for later: their
        renewals would only wait for the budget, holding slots another tenant could use."""
        return await renewal_claims.claim_renewals(self.sessions, now=now, lease=self.lease, limit=limit,
                                                   skip_tenants=self.gmail.budgets.deferred())

    def to_process(self, claims: Sequence[ClaimedRenewal]) -> list[ClaimedRenewal]:
        # Registrations sharing one Gmail watch (same address and project) are renewed
        # once per batch; the others are due again after the lease and then find it fresh.
        return list({self._watch_key(claim.mailbox): claim for claim in reversed(claims)}.values())

    async def process(self, claim: ClaimedRenewal) -> str:
        return await self.renew_claimed(claim)

    @contextlib.asynccontextmanager
    async def holding(self, claims: Sequence[ClaimedRenewal]):
        """Keep the round's claims while they wait for a slot and run: a round is a whole
        batch run `concurrency` at a time, and a slow Gmail or a tenant's budget in debt
        can keep one past its lease, which another replica would then claim too (a
        second users.watch, 100 units). Every third of the lease, one statement moves on
        the leases of the claims not finished yet."""
        self._fences.update({claim.mailbox.id: claim.fences for claim in claims})
        done = asyncio.Event()
        beating = asyncio.create_task(self._keep_leases(done))
        try:
            yield
        finally:
            done.set()  # told, not cancelled: a cancel mid-statement would strand its connection
            await asyncio.gather(beating, return_exceptions=True)
            for claim in claims:
                self._fences.pop(claim.mailbox.id, None)

    async def _keep_leases(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._beat_seconds())
            if done.is_set() or not self._fences:
                continue
            beat = self._beat = _Beat(dict(self._fences), self.clock.now() + self.lease)
            try:
                beat.kept = await renewal_claims.extend_claims(self.sessions, beat.fences, until=beat.until)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the margin
                beat.unanswered = True
                log.warning("could not extend the leases of %d renewals", len(beat.fences), exc_info=True)
            finally:
                for mailbox_id in beat.fences.keys() & self._fences.keys():
                    self._fences[mailbox_id] = beat.fences_after(mailbox_id, self._fences[mailbox_id])
                self._beat = None
                beat.done.set()

    async def _fenced(self, claim: ClaimedRenewal) -> ClaimedRenewal:
        """The claim with its fences as they are now, no longer extended: called before an outcome
        is written (a heartbeat on its way may move the fence; the write waits for it)."""
        fences = self._fences.pop(claim.mailbox.id, None)
        if fences is None:
            return claim
        beat = self._beat
        if beat is not None and claim.mailbox.id in beat.fences:
            await beat.done.wait()
            fences = beat.fences_after(claim.mailbox.id, fences)
        return dataclasses.replace(claim, claimed_until=fences[0], unanswered_fences=fences[1:])

    def _topic(self, mailbox) -> str:
        return mailbox.watch_topic or self.topic

    def _watch_key(self, mailbox) -> tuple[str, str]:
        return mailbox.email_address, topic_project(self._topic(mailbox)) or ""

    async def renew_claimed(self, claim: ClaimedRenewal) -> str:
        mailbox = claim.mailbox
        credential: Credential | None = None
        try:
            credential = self.secret_box.open(claim.credential, tenant_id=mailbox.tenant_id)
            _, project = self._watch_key(mailbox)
            sharing, fresh = await renewal_claims.watch_group_state(
                self.sessions, mailbox, project, deployment_topic=self.topic)
            if fresh is not None and fresh > self.clock.now() + SHARED_WATCH_FRESH:
                # Another registration of this address and project renewed the shared watch
                # within the last day (with a filter covering this one): no second call.
                return await self._renewed(claim, WatchResult(history_id=mailbox.history_id or 0, expiration=fresh))
            watch = await watch_taking_over(
                self.gmail, credential, mailbox.email_address, topic=self._topic(mailbox),
                label_filter=union_filter([mailbox.label_filter, *(member.label_filter for member in sharing)]),
                tenant_id=mailbox.tenant_id,
            )
        except Exception as exc:  # noqa: BLE001 - one mailbox's failure must not stop the others
            if not isinstance(exc, errors.MailwatchError):
                log.exception("renewal of mailbox %s failed unexpectedly", mailbox.id)
            return await self._failed(claim, credential, exc)
        return await self._renewed(claim, watch)

    # --- outcomes -------------------------------------------------------------

    def _event(self, claim: ClaimedRenewal, type: EventType, detail: dict) -> NewEvent:
        mailbox = claim.mailbox
        return NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=type, detail=detail)

    def _expired_events(self, claim: ClaimedRenewal, now: datetime, reason: str) -> list[NewEvent]:
        """WATCH_EXPIRED, if the claimed watch has lapsed and nobody said so yet."""
        if not (claim.watch_lapsed(now) and claim.expiry_unreported):
            return []
        log.warning("watch of mailbox %s expired before it could be renewed", claim.mailbox.id,
                    extra={"tenant_id": str(claim.mailbox.tenant_id), "mailbox_id": str(claim.mailbox.id)})
        expiration = claim.mailbox.watch_expiration
        return [self._event(claim, EventType.WATCH_EXPIRED, {"expiration": expiration.isoformat(), "reason": reason})]

    def _expiring_events(self, claim: ClaimedRenewal, now: datetime, reason: str) -> list[NewEvent]:
        """WATCH_EXPIRING, once per watch: renewal is failing and the expiration is within the horizon."""
        if not claim.expiring_unreported(now, self.expiring_horizon):
            return []
        expiration = claim.mailbox.watch_expiration
        log.warning("watch of mailbox %s expires at %s and renewal keeps failing (%s)", claim.mailbox.id,
                    expiration.isoformat(), reason,
                    extra={"tenant_id": str(claim.mailbox.tenant_id), "mailbox_id": str(claim.mailbox.id)})
        return [self._event(claim, EventType.WATCH_EXPIRING, {
            "expiration": expiration.isoformat(), "reason": reason,
            "failed_attempts": str(claim.renew_attempts + 1),
        })]

    async def _renewed(self, claim: ClaimedRenewal, watch: WatchResult) -> str:
        claim = await self._fenced(claim)
        mailbox = claim.mailbox
        now = self.clock.now()
        events = self._expired_events(claim, now, "RENEWED_LATE")
        previous = mailbox.watch_expiration.isoformat() if mailbox.watch_expiration else ""
        events.append(self._event(claim, EventType.WATCH_RENEWED, {
            "expiration": watch.expiration.isoformat(),
            "previous_expiration": previous,
            "watch_history_id": str(watch.history_id),
        }))
        due = next_renewal_at(now, watch.expiration, key=renewal_key(mailbox.tenant_id, mailbox.email_address))
        written = await renewal_claims.record_renewal(
            self.sessions, claim, expiration=watch.expiration, next_renewal_at=due, now=now, events=events
        )
        if written and len(events) > 1:
            WATCHES_EXPIRED.inc()
        return "renewed" if written else "lease_lost"

    async def _failed(self, claim: ClaimedRenewal, credential: Credential | None, exc: BaseException) -> str:
        """Back off (never before Gmail's retry time), or end in a terminal state as sync does."""
        claim = await self._fenced(claim)
        now = self.clock.now()
        failure = failure_of(exc, now, doing="watch renewal")
        if failure.terminal is not None:
            return await self._terminal(claim, credential, failure, now)
        retry_at = failure.retry_at(self.backoff.next_attempt_at(now, claim.renew_attempts + 1))
        expiration = claim.mailbox.watch_expiration
        if expiration is not None and expiration > now and failure.gmail_retry_at is None:
            # Look again the moment the watch lapses, so WATCH_EXPIRED is not late
            # (unless Gmail said not to call before a later time).
            retry_at = min(retry_at, expiration)
        events = self._expired_events(claim, now, failure.reason)
        expiring = self._expiring_events(claim, now, failure.reason)
        written = await renewal_claims.record_renewal_failure(
            self.sessions, claim, reason=failure.reason, message=failure.message, retry_at=retry_at,
            gmail_retry_at=failure.gmail_retry_at, now=now, events=events + expiring,
            expiry_reported=bool(events), expiring_reported=bool(expiring),
        )
        if written and events:
            WATCHES_EXPIRED.inc()
        return failure.outcome if written else "lease_lost"

    async def _terminal(self, claim: ClaimedRenewal, credential: Credential | None, failure: Failure,
                        now: datetime) -> str:
        state, event_type = failure.terminal
        if credential is not None and state is MailboxState.AUTH_FAILED:
            self.gmail.forget(credential, claim.mailbox.tenant_id)
        events = self._expired_events(claim, now, failure.reason)
        events.append(self._event(claim, event_type, failure.detail))
        written = await renewal_claims.mark_terminal(
            self.sessions, claim, state=state, reason=failure.reason, message=failure.message, now=now,
            events=events, expiry_reported=len(events) > 1,
        )
        if written and len(events) > 1:
            WATCHES_EXPIRED.inc()
        return failure.outcome if written else "lease_lost"
