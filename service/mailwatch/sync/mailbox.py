"""The sync of one claimed mailbox: bring its change log up to Gmail's history.

It pages `history.list` from the last synced history id (`listing`), turns
each page into change events (`history_events`, with metadata: `metadata`)
and commits every page's events together with the new history id, fenced on
the claim's lease (`store.sync_claims`), so a crash anywhere loses nothing
and duplicates nothing. Failures are decided once (`domain.failures`): expired
history → full resync; revoked credentials → AUTH_FAILED and refused access →
ACCESS_REFUSED (terminal, one lifecycle event, no more Gmail calls); rate
limits / 5xx / clock skew → backoff, never before the retry time Gmail named.

Poison history: a page that raised unexpectedly, or whose worker was lost,
`poison_after` times in a row (`page_failures`, counted by the store) is then
worked through one history record at a time; a record that still raises, or
on which a worker is lost again, is skipped with a HISTORY_SKIPPED event
naming its message ids, and everything around it is delivered as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta

import cachetools
from prometheus_client import Counter

from mailwatch.clock import Clock
from mailwatch.domain import errors
from mailwatch.domain.failures import failure_of
from mailwatch.domain.models import Credential, EventType, Mailbox, MailboxState, MessageLabels, NewEvent
from mailwatch.domain.text import storable_text
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.history import HistoryRecord
from mailwatch.secrets import SecretBox
from mailwatch.store import sync_claims
from mailwatch.store._errors import is_database_unavailable
from mailwatch.store.db import Sessions
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.sync.history_events import announced_by_watch, events_from_history, labels_needed, newest_history_id
from mailwatch.sync.listing import HistoryListing, ListedPage
from mailwatch.sync.metadata import with_metadata
from mailwatch.sync.warnings import notifications_missed_event

log = logging.getLogger(__name__)

SYNC_EVENTS = Counter("mailwatch_sync_events_total", "Change events written by sync")
SYNC_BEHIND_NOTIFICATION = Counter(
    "mailwatch_sync_behind_notification_total",
    "Syncs that ended short of a notified history id Gmail's history did not show yet (looked at again later)",
)
SUSPICIOUS_NOTIFICATIONS = Counter(
    "mailwatch_suspicious_notifications_total",
    "Notified history ids still beyond Gmail's own history after the bounded catch-up: dropped",
)
HISTORY_SKIPPED = Counter(
    "mailwatch_history_records_skipped_total",
    "History records skipped after repeated failures (poison history), by cause",
    ["cause"],
)

#: How long a mailbox waits for history.list to catch up with a notification
#: (Gmail's history can trail its own notification for a moment), and how many
#: looks it gets: 1 + 2 + 4 + 8 + 16 + 32 s at most, then the notified id is
#: taken to be bogus. Gmail answers every look for 2 quota units.
CATCH_UP_BACKOFF = BackoffPolicy(base_seconds=1.0, max_seconds=32.0)
CATCH_UP_ATTEMPTS = 6

#: Consecutive unexpected failures or lost workers at the same history page
#: before it is worked through record by record (and its failing records skipped).
#: A bug or an answer our code cannot handle fails every time; a crash that
#: happens to hit one page twice in a row is rare, five times is not chance.
POISON_AFTER = 5

#: How long what a failed sync fetched is kept for the mailbox's next attempt.
CARRY_SECONDS = 600.0


@dataclass(frozen=True)
class MailboxSync:
    """What syncing a mailbox needs; `run` syncs one claim and returns its outcome label."""

    sessions: Sessions
    gmail: GmailClient
    secret_box: SecretBox
    clock: Clock
    owner: str  # the lease owner every write is fenced on
    lease: timedelta
    backoff: BackoffPolicy
    catch_up_backoff: BackoffPolicy = CATCH_UP_BACKOFF
    catch_up_attempts: int = CATCH_UP_ATTEMPTS
    poison_after: int = POISON_AFTER
    # What a failed attempt had already fetched from Gmail, per mailbox: the next attempt
    # starts from it instead of asking again (a state that has gone stale since is
    # recognised as such and fetched anew, see history_events; metadata does not change).
    carried: cachetools.TTLCache = field(
        default_factory=lambda: cachetools.TTLCache(maxsize=10_000, ttl=CARRY_SECONDS), compare=False)

    async def run(self, claim: sync_claims.ClaimedMailbox) -> str:
        mailbox = claim.mailbox
        credential: Credential | None = None
        fetched = self._carried_over(mailbox)
        try:
            credential = self.secret_box.open(claim.credential, tenant_id=mailbox.tenant_id)
            if mailbox.page_failures >= self.poison_after and mailbox.history_id is not None:
                mailbox = await self._work_through_poison(mailbox, credential, fetched)
            await self._sync_history(mailbox, credential, fetched)
            return "synced"
        except errors.GmailHistoryExpired:
            return await self._resync(mailbox, credential)
        except sync_claims.LeaseLost:
            log.warning("lease on mailbox %s lost; another worker took it over", mailbox.id)
            return "lease_lost"
        except Exception as exc:  # noqa: BLE001 - one mailbox's failure must not stop the others
            if not isinstance(exc, errors.MailwatchError):
                log.exception("sync of mailbox %s failed unexpectedly", mailbox.id)
            self._carry(mailbox, fetched)
            return await self._failed(mailbox, credential, exc)

    def _carried_over(self, mailbox: Mailbox) -> dict[str, MessageLabels | None]:
        if not self.carried:  # no sync failed lately (the usual case): no TTLCache lookup per sync
            return {}
        return dict(self.carried.pop(mailbox.id, {}))

    def _carry(self, mailbox: Mailbox, fetched: dict[str, MessageLabels | None]) -> None:
        # Only what Gmail had: a message not found may just not have been visible yet.
        kept = {message_id: state for message_id, state in fetched.items() if state is not None}
        if kept:
            self.carried[mailbox.id] = kept

    async def _sync_history(self, mailbox: Mailbox, credential: Credential,
                            fetched: dict[str, MessageLabels | None]) -> None:
        synced = mailbox.history_id
        if synced is None:  # never watched successfully: nothing to page from
            raise errors.GmailHistoryExpired("mailbox has no history id yet")
        listing = HistoryListing(self.gmail, credential, mailbox, synced, fetched)
        first_page_history_id: int | None = None
        while (listed := await listing.next_page()) is not None:
            page = listed.page
            if first_page_history_id is None:
                first_page_history_id = page.history_id
            final = page.next_page_token is None
            newest = newest_history_id(first_page_history_id, page.records) if final else 0
            new_history_id = max([synced, newest, *(record.id for record in page.records)])
            events = await self._events(mailbox, credential, listed, fetched)
            missed = None
            if events and synced == mailbox.history_id:  # the sync's first page: was anything announced?
                missed = notifications_missed_event(mailbox, announced_by_watch(
                    listed.page.records, label_filter=mailbox.label_filter, known_labels=listed.labels,
                    later_records=listed.later, covered=listed.covered,
                ))
            if missed is not None:
                events = [missed, *events]
            committed = await sync_claims.commit_sync_page(
                self.sessions, mailbox, owner=self.owner, expected_history_id=synced,
                new_history_id=new_history_id, events=events, final=final, now=self.clock.now(),
                lease=self.lease, notifications_missed=missed is not None, **self._catch_up(mailbox),
            )
            self._report_catch_up(mailbox, committed, new_history_id)
            SYNC_EVENTS.inc(len(events))
            synced = new_history_id

    async def _events(self, mailbox: Mailbox, credential: Credential, listed: ListedPage,
                      fetched: dict[str, MessageLabels | None]) -> list[NewEvent]:
        """The page's change events, with message metadata for a mailbox that wants it."""
        events = events_from_history(
            listed.page.records, mailbox_id=mailbox.id, email_address=mailbox.email_address,
            label_filter=mailbox.label_filter, known_labels=listed.labels, later_records=listed.later,
            covered=listed.covered, include_drafts=mailbox.include_drafts, previous_record=listed.previous,
        )
        return await with_metadata(self.gmail, credential, mailbox, events, fetched, deleted=listed.deleted)

    async def _work_through_poison(self, mailbox: Mailbox, credential: Credential,
                                   fetched: dict[str, MessageLabels | None]) -> Mailbox:
        """Poison history: the page at the mailbox's history id failed `poison_after` times.

        Its records are processed and committed one at a time (the failure count
        moves along with them); a record that raises is skipped with a
        HISTORY_SKIPPED event in the same transaction as the history id that
        passes it. If the count grew past the bound, the worker was lost on the
        first record left (a lost worker cannot be caught): that one is skipped
        without trying again. The page's last record ends the count; the mailbox
        as it then stands is returned, and the rest of its history syncs as usual.
        """
        listing = HistoryListing(self.gmail, credential, mailbox, mailbox.history_id, fetched)
        page = await listing.page(None)
        synced = mailbox.history_id
        lost_on_first = mailbox.page_failures > self.poison_after
        for index, record in enumerate(page.records):
            record_id = max(synced, record.id)
            later = page.records[index + 1:]
            keep_count = bool(later)
            if index == 0 and lost_on_first:
                await self._skip_record(mailbox, synced, record, keep_count, cause="worker_lost",
                                        error="the sync worker was lost while processing it")
                synced = record_id
                continue
            try:
                # The record alone, with the rest of the page to trace its labels back through.
                window = replace(page, records=page.records[index:])
                await listing.fetch_labels(labels_needed([record], mailbox.label_filter),
                                           listing.states([window]).deleted)
                alone = replace(listing.states([window]), page=replace(page, records=(record,)), later=later,
                                previous=page.records[index - 1] if index else None)
                events = await self._events(mailbox, credential, alone, fetched)
                await self._commit_record(mailbox, synced, record_id, events, keep_count)
            except (errors.MailwatchError, sync_claims.LeaseLost):
                raise  # Gmail's answers and a lost lease have their own handling
            except Exception as exc:  # noqa: BLE001 - this record is the poison: skip it, keep the rest
                if is_database_unavailable(exc):
                    raise
                await self._skip_record(mailbox, synced, record, keep_count, cause="exception",
                                        error=f"{type(exc).__name__}: {exc}")
            synced = record_id
        return replace(mailbox, history_id=synced)

    async def _commit_record(
        self, mailbox: Mailbox, synced: int, record_id: int, events: list[NewEvent], keep_count: bool,
    ) -> None:
        await sync_claims.commit_sync_page(
            self.sessions, mailbox, owner=self.owner, expected_history_id=synced, new_history_id=record_id,
            events=events, final=False, now=self.clock.now(), lease=self.lease, keep_page_failures=keep_count,
        )

    async def _skip_record(
        self, mailbox: Mailbox, synced: int, record: HistoryRecord, keep_count: bool, *, cause: str, error: str,
    ) -> None:
        """Pass `record` with a HISTORY_SKIPPED event naming its message ids (one statement)."""
        event = NewEvent(
            mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.HISTORY_SKIPPED,
            history_id=record.id,
            detail={"reason": "PROCESSING_FAILED" if cause == "exception" else "WORKER_LOST",
                    # Text jsonb can hold, whatever the failure said: the skip must commit.
                    "message_ids": ",".join(record.message_ids), "error": storable_text(error[:500]),
                    "attempts": str(mailbox.page_failures)},
        )
        await self._commit_record(mailbox, synced, max(synced, record.id), [event], keep_count)
        HISTORY_SKIPPED.labels(cause=cause).inc()
        log.error(
            "poison history: skipped history record %s of mailbox %s after %d failed attempts (%s); "
            "its messages get no change events: %s",
            record.id, mailbox.id, mailbox.page_failures, error, ", ".join(record.message_ids) or "(none named)",
            extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)},
        )

    async def _resync(self, mailbox: Mailbox, credential: Credential) -> str:
        """History older than Gmail keeps: take a full-sync baseline and say so."""
        try:
            # getProfile counts the messages: walking messages.list (5 units and a round
            # trip per 500) only to count them made a large mailbox's resync outlive its lease.
            profile = await self.gmail.profile(credential, mailbox.email_address, tenant_id=mailbox.tenant_id)
        except errors.MailwatchError as exc:
            return await self._failed(mailbox, credential, exc)
        common = dict(mailbox_id=mailbox.id, email_address=mailbox.email_address)
        events = [
            NewEvent(type=EventType.RESYNC_REQUIRED, history_id=mailbox.history_id,
                     detail={"reason": "HISTORY_EXPIRED", "from_history_id": str(mailbox.history_id)}, **common),
            NewEvent(type=EventType.RESYNCED, history_id=profile.history_id,
                     detail={"baseline_history_id": str(profile.history_id),
                             "message_count": str(profile.messages_total)},
                     **common),
        ]
        try:
            committed = await sync_claims.commit_sync_page(
                self.sessions, mailbox, owner=self.owner, expected_history_id=mailbox.history_id,
                new_history_id=profile.history_id, events=events, final=True,
                now=self.clock.now(), lease=self.lease, **self._catch_up(mailbox),
            )
        except sync_claims.LeaseLost:
            return "lease_lost"
        self._report_catch_up(mailbox, committed, profile.history_id)
        return "resynced"

    def _catch_up(self, mailbox: Mailbox) -> dict:
        """When to look again if the sync ends short of the notified id, and
        whether the bound on such looks is reached (sync_attempts counts them)."""
        attempt = mailbox.sync_attempts + 1
        return {
            "catch_up_at": self.catch_up_backoff.next_attempt_at(self.clock.now(), attempt),
            "give_up_catch_up": attempt > self.catch_up_attempts,
        }

    def _report_catch_up(self, mailbox: Mailbox, committed: sync_claims.PageCommit, gmail_history_id: int) -> None:
        if committed.catch_up is sync_claims.CatchUp.BEHIND:
            SYNC_BEHIND_NOTIFICATION.inc()
            log.info(
                "mailbox %s synced to history %d, short of notified %s; looking again with backoff",
                mailbox.id, gmail_history_id, committed.notified_history_id,
                extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)},
            )
        elif committed.catch_up is sync_claims.CatchUp.GAVE_UP:
            SUSPICIOUS_NOTIFICATIONS.inc()
            log.warning(
                "suspicious notification for mailbox %s: history id %s is beyond Gmail's history (%d) after %d "
                "looks; no longer due for it",
                mailbox.id, committed.notified_history_id, gmail_history_id, self.catch_up_attempts,
                extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)},
            )

    async def _failed(self, mailbox: Mailbox, credential: Credential | None, exc: BaseException) -> str:
        """Record the failure: back off (never before Gmail's retry time), or end in a terminal state."""
        now = self.clock.now()
        failure = failure_of(exc, now, doing="sync")
        if failure.terminal is None:
            backoff_at = self.backoff.next_attempt_at(now, mailbox.sync_attempts + 1)
            await sync_claims.record_sync_failure(
                self.sessions, mailbox, owner=self.owner, reason=failure.reason, message=failure.message,
                retry_at=failure.retry_at(backoff_at), gmail_retry_at=failure.gmail_retry_at, now=now,
                # Only our own unexpected failures can be a poison page; Gmail's errors
                # and a database outage say nothing about the page.
                page_failed=not isinstance(exc, errors.MailwatchError) and not is_database_unavailable(exc),
            )
            return failure.outcome
        state, event_type = failure.terminal
        if credential is not None and state is MailboxState.AUTH_FAILED:
            self.gmail.forget(credential, mailbox.tenant_id)
        event = NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=event_type,
                         history_id=mailbox.history_id, detail=failure.detail)
        if await sync_claims.mark_terminal(
            self.sessions, mailbox, owner=self.owner, state=state, reason=failure.reason, message=failure.message,
            now=now, event=event,
        ):
            log.warning("mailbox %s is now %s: %s", mailbox.id, state.value, failure.message,
                        extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)})
        return failure.outcome
