"""One claimed backfill: list the requested messages once, then deliver them oldest first.

Listing (`messages.list`, newest first, 500 a page) stops at the request's
count; the ids are stored oldest first with the move to DELIVERING
(`store.backfills.save_listing`), so a worker killed later neither lists
again nor reorders. Delivery reads each batch's labels (and metadata, for a
mailbox with metadata on) with `messages.get` in Gmail batches, the sync's
way (`GmailClient.message_labels`: the tenant's budget, the per-user
in-flight slots), and commits the batch's MESSAGE_EXISTING events with the
progress pointer (`store.backfills.deliver_batch`), deciding per message
(`decide`, oldest first):

- Gmail no longer has it (deleted before its turn): skipped. A deletion is
  the live stream's to report (MESSAGE_DELETED); a message that no longer
  exists is not "existing".
- the registration's label filter does not admit its current labels: skipped.
- a draft (DRAFT among its labels) and the registration leaves drafts out
  (`include_drafts` false, the default): skipped, as the live sync leaves out
  every change of a draft (`history_events`).
- the log already has a MESSAGE_ADDED (or MESSAGE_EXISTING) for it since the
  backfill was requested: the live sync delivered it; skipped.
- its last change (messages.get's historyId) is beyond the mailbox's synced
  history id, or the log has a change of it newer than what was read: the
  live sync has not passed it yet, or the labels read are stale. The batch
  stops before it (the mailbox is made due for a sync) and is read again
  shortly, so a message is never delivered both ways and never with labels
  older than a change the stream already carried.
- otherwise: MESSAGE_EXISTING with its labels (and metadata).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

import cachetools
from prometheus_client import Counter, Histogram

from mailwatch.clock import Clock
from mailwatch.domain import errors
from mailwatch.domain.backfill import BackfillState
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.domain.failures import failure_of
from mailwatch.domain.models import Credential, EventType, Mailbox, MessageLabels, NewEvent
from mailwatch.gmail.calls import GmailCall
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.quota import UNITS
from mailwatch.secrets import SecretBox
from mailwatch.store import backfills
from mailwatch.store.db import Sessions
from mailwatch.sync.history_events import DRAFT

log = logging.getLogger(__name__)

BACKFILL_EVENTS = Counter("mailwatch_backfill_events_total", "MESSAGE_EXISTING events appended by backfills")
_BATCH_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_POSTGRES_SECONDS = Histogram(
    "mailwatch_backfill_batch_postgres_seconds",
    "Time one backfill delivery batch spent in Postgres (reading the batch, its transaction to the commit)",
    buckets=_BATCH_BUCKETS)
WRITER_LOCK_SECONDS = Histogram(
    "mailwatch_backfill_writer_lock_seconds",
    "Time one backfill delivery batch held its tenant's writer lock (the tenant's live commits wait meanwhile)",
    buckets=_BATCH_BUCKETS)

LIST_PAGE_SIZE = 500  # Gmail's maximum maxResults for messages.list
# Messages per delivery transaction: one Gmail batch lookup's worth, twice over (BATCH_PARTS 25).
DELIVERY_BATCH = 50
# How soon a batch waiting for the live sync to pass a message is read again.
WAIT_FOR_SYNC = timedelta(seconds=1)

# Gmail's final refusals of a backfill's own request: it ends FAILED instead of trying again.
_REFUSED_FOR_GOOD = (errors.GmailLabelRejected, errors.GmailQueryRejected)

_DELIVERED_ONCE = frozenset({EventType.MESSAGE_ADDED, EventType.MESSAGE_EXISTING})


def decide(mailbox: Mailbox, batch: list[backfills.ListedMessage], found: dict[str, MessageLabels | None],
           synced: int | None, logged: dict[str, list[backfills.LiveEvent]]) -> backfills.Delivery:
    """The events of `batch` (oldest first) and how many positions they pass (see the module docstring)."""
    events: list[NewEvent] = []
    skipped = 0
    consumed = 0
    for listed in batch:
        state = found.get(listed.message_id)
        seen = logged.get(listed.message_id, [])
        if state is None or not mailbox.label_filter.admits(state.label_ids) \
                or (DRAFT in state.label_ids and not mailbox.include_drafts) \
                or any(event.type in _DELIVERED_ONCE for event in seen):
            skipped += 1
        elif synced is None or state.history_id > synced \
                or any((event.history_id or 0) > state.history_id for event in seen):
            break  # not passed by the live sync yet, or read before a change the log has: wait
        else:
            events.append(NewEvent(
                mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_EXISTING,
                history_id=state.history_id, message_id=listed.message_id, thread_id=listed.thread_id,
                label_ids=state.label_ids, metadata=state.metadata,
            ))
        consumed += 1
    return backfills.Delivery(events, consumed, skipped)


def completed_event(mailbox: Mailbox, listed: int, delivered: int, skipped: int, **failure: str) -> NewEvent:
    """BACKFILL_COMPLETED with the counts (and, for a backfill Gmail refused, its `reason` and `error`)."""
    return NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.BACKFILL_COMPLETED,
                    history_id=mailbox.history_id,
                    detail={"listed": str(listed), "delivered": str(delivered), "skipped": str(skipped), **failure})


class _Pace:
    """One backfill's Gmail calls at `units_per_minute` at most: a call waits until the units
    spent before it fit the rate (the first goes at once). Gmail locks a user out for
    minutes to hours past its per-user rate, live syncs included, so the backfill keeps
    below it rather than finding it."""

    def __init__(self, units_per_minute: int) -> None:
        self._per_second = units_per_minute / 60.0
        self._free_at = 0.0  # monotonic time from which the next call fits the rate

    async def spend(self, units: float) -> None:
        now = time.monotonic()
        if self._free_at > now:
            await asyncio.sleep(self._free_at - now)
        # No credit for idle time: a backfill back from a pause does not burst.
        self._free_at = max(self._free_at, now) + units / self._per_second


@dataclass(frozen=True)
class MailboxBackfill:
    """What running a backfill needs; `run` works one claim and returns its outcome label."""

    sessions: Sessions
    gmail: GmailClient
    secret_box: SecretBox
    clock: Clock
    owner: str
    backoff: BackoffPolicy
    units_per_minute: int = 3000  # the pace of one backfill's Gmail calls (SyncSettings.backfill_units_per_minute)
    # Each mailbox's pace, kept across its claims: a backfill waiting for the sync is claimed
    # again within seconds and must not start a fresh allowance each time.
    paces: cachetools.TTLCache = field(
        default_factory=lambda: cachetools.TTLCache(maxsize=10_000, ttl=600), compare=False)
    # Each backfill's reading of the log (`backfills.LiveLog`), kept the same way: a claim
    # reads on from where the last one stopped instead of from the backfill's start.
    live_logs: cachetools.TTLCache = field(
        default_factory=lambda: cachetools.TTLCache(maxsize=10_000, ttl=600), compare=False)

    async def run(self, claim: backfills.ClaimedBackfill) -> str:
        job, mailbox = claim.job, claim.mailbox
        try:
            credential = self.secret_box.open(claim.credential, tenant_id=mailbox.tenant_id)
            pace = self.paces.setdefault(mailbox.id, _Pace(self.units_per_minute))
            if job.state is BackfillState.LISTING:
                job = await self._list(job, mailbox, credential, pace)
            return await self._deliver(job, mailbox, credential, pace)
        except backfills.MailboxNotActive:
            # Stopped while the claim ran: not claimed again until it is ACTIVE again.
            log.info("backfill of mailbox %s: the mailbox is no longer active", mailbox.id)
            now = self.clock.now()
            await backfills.release(self.sessions, job, owner=self.owner, due_at=now, now=now)
            return "mailbox_not_active"
        except backfills.LeaseLost:
            log.warning("backfill of mailbox %s: claim lost", mailbox.id)
            return "lease_lost"
        except _REFUSED_FOR_GOOD as exc:
            # The request itself is what Gmail refuses (a label id the mailbox does not have):
            # trying again changes nothing. The mailbox and its live stream are not affected.
            log.warning("backfill of mailbox %s refused by Gmail: %s", mailbox.id, exc.message,
                        extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)})
            detail = {"reason": exc.reason, "error": exc.message}
            await backfills.fail(self.sessions, job, owner=self.owner, reason=exc.reason, message=exc.message,
                                 completed_event=lambda *counts: completed_event(mailbox, *counts, **detail),
                                 now=self.clock.now())
            return "failed"
        except Exception as exc:  # noqa: BLE001 - recorded on the backfill and tried again after a backoff
            if not isinstance(exc, errors.MailwatchError):
                log.exception("backfill of mailbox %s failed unexpectedly", mailbox.id)
            now = self.clock.now()
            failure = failure_of(exc, now, doing="backfill")
            retry_at = failure.retry_at(self.backoff.next_attempt_at(now, job.attempts + 1))
            await backfills.release(self.sessions, job, owner=self.owner, due_at=retry_at, now=now,
                                    failure=(failure.reason, failure.message))
            return failure.outcome

    async def _list(self, job: backfills.BackfillJob, mailbox: Mailbox, credential: Credential,
                    pace: "_Pace") -> backfills.BackfillJob:
        request = job.request
        newest_first: list[tuple[str, str | None]] = []
        token: str | None = None
        while len(newest_first) < request.limit:
            await pace.spend(UNITS[GmailCall.MESSAGES_LIST])
            page = await self.gmail.list_messages(
                credential, mailbox.email_address, label_ids=request.label_ids, query=request.query(),
                max_results=min(LIST_PAGE_SIZE, request.limit - len(newest_first)), page_token=token,
                tenant_id=mailbox.tenant_id,
            )
            newest_first.extend((message.id, message.thread_id) for message in page.messages)
            token = page.next_page_token
            if token is None:
                break
        oldest_first = list(reversed(newest_first[:request.limit]))
        return await backfills.save_listing(self.sessions, job, owner=self.owner, listed=oldest_first,
                                            now=self.clock.now())

    async def _deliver(self, job: backfills.BackfillJob, mailbox: Mailbox, credential: Credential,
                       pace: "_Pace") -> str:
        live = self.live_logs[mailbox.id] = backfills.LiveLog.for_job(job, self.live_logs.get(mailbox.id))
        while True:
            started = time.perf_counter()
            batch = await backfills.listed_messages(self.sessions, job, limit=DELIVERY_BATCH)
            in_postgres = time.perf_counter() - started
            found: dict[str, MessageLabels | None] = {}
            if batch:
                await pace.spend(UNITS[GmailCall.MESSAGES_GET] * len(batch))
                await self.gmail.message_labels(
                    credential, mailbox.email_address, [listed.message_id for listed in batch],
                    tenant_id=mailbox.tenant_id, metadata_headers=mailbox.metadata_headers, into=found,
                )
            started = time.perf_counter()
            job, done = await backfills.deliver_batch(
                self.sessions, job, mailbox, owner=self.owner, message_ids=[listed.message_id for listed in batch],
                decide=lambda synced, logged: decide(mailbox, batch, found, synced, logged),
                completed_event=lambda *counts: completed_event(mailbox, *counts), now=self.clock.now(), live=live,
            )
            BATCH_POSTGRES_SECONDS.observe(in_postgres + time.perf_counter() - started)
            WRITER_LOCK_SECONDS.observe(done.writer_lock_seconds)
            BACKFILL_EVENTS.inc(done.delivered)
            if done.completed:
                self.live_logs.pop(mailbox.id, None)
                log.info("backfill of mailbox %s completed: %d listed, %d delivered, %d skipped", mailbox.id,
                         job.listed, job.delivered, job.skipped,
                         extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)})
                return "completed"
            if not batch:
                raise RuntimeError(f"backfill of mailbox {mailbox.id}: no listed message at position "
                                   f"{job.next_position} of {job.listed}")
            if done.delivered + done.skipped < len(batch):
                # A message waits for the live sync: ask for one, and come back shortly.
                now = self.clock.now()
                await backfills.request_sync(self.sessions, mailbox.id, now=now)
                await backfills.release(self.sessions, job, owner=self.owner, due_at=now + WAIT_FOR_SYNC, now=now)
                return "waiting_for_sync"
