"""The sync worker: claims due mailboxes and brings their change log up to Gmail.

For each claimed mailbox it pages `history.list` from the last synced history
id and commits every page's events together with the new history id (fenced
on its lease), so a crash anywhere loses nothing and duplicates nothing.
Failures are classified: expired history → full resync; revoked credentials →
AUTH_FAILED and refused access → ACCESS_REFUSED (terminal, one lifecycle
event, no more Gmail calls); rate limits / 5xx / clock skew → per-mailbox
backoff, never before the retry time Gmail named (`workers.outcome`).

Poison history: a page that raised unexpectedly, or whose worker was lost,
`poison_after` times in a row (`page_failures`, counted by the store) is then
worked through one history record at a time; a record that still raises, or
on which a worker is lost again, is skipped with a HISTORY_SKIPPED event
naming its message ids, and everything around it is delivered as usual.

Where the CPU per notification goes (issue 14; py-spy on the service during
`benchmarks/pipeline.py --mailboxes 150 --latency-changes 600 --phases latency
--profile DIR`: 100 notifications/s, one tenant, a host at load 3-10). Before:
~8.2 ms of service CPU per notification, ~11-13 ms per sync (syncs coalesce
notifications). The event loop held ~75% of it, the Gmail pool threads ~22%:
- ~12%: a discovery `Resource` built per Gmail call (`service.users()`,
  `users.messages()`: every method of the resource, from the discovery
  document). Now built once per pool thread (`gmail.client._ThreadUsers`).
- ~33%: SQLAlchemy around each statement (ORM session and transaction
  machinery, statements and their cache keys built per call), and ~33%
  psycopg's and asyncio's cost per round trip: ten per sync (claim: pre-ping,
  BEGIN, UPDATE, COMMIT; page: pre-ping, BEGIN, SELECT … FOR UPDATE, UPDATE,
  lock + NOTIFY, INSERT, COMMIT). Now five: the claim runs in autocommit, and a
  page's commit is ONE statement in autocommit (`_page_transaction`,
  `store.changes.update_and_append`), which also ends its row and tenant locks
  when Postgres finishes it rather than a COMMIT round trip later.
- the rest: the two Gmail exchanges per sync (history.list and the labels'
  messages.get: history gives added messages no labels) through httplib2 and
  http.client, ingest's batch write, the stream's read.
- (introduced, then removed: compiling the one-statement page commit per call
  cost a fifth; its UPDATE now comes from SQLAlchemy's compiled cache.)
A/B back to back at load 4-7, before -> after: 6.2-6.8 -> 5.0-5.7 ms of service
CPU per notification, 8.4-10.9 -> 5.3-5.7 ms per sync; per notification gains
less than per sync because claims no longer wait for a round, so notifications
rarely coalesce (one sync each instead of 0.56-0.77), which is also what cut
change-to-stream latency (p50 1.2-1.96 s -> 0.13-0.97 s, p99 2.9-4.2 s ->
0.75-2.0 s in the same runs). What is left is spread over SQLAlchemy's session
and statement building around each statement (~25%), psycopg and asyncio per
round trip (~25%), the Gmail exchanges, credential decryption (~4%), ingest and
the stream read, with no single hot spot; 2 ms would take leaving SQLAlchemy's
ORM session on this path and fewer Gmail exchanges per sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import replace
from datetime import datetime

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.config import SyncSettings
from mailwatch.domain import errors
from mailwatch.domain.models import Credential, EventType, Mailbox, MailboxState, MessageLabels, NewEvent
from mailwatch.domain.text import storable_text
from mailwatch.gmail.client import HistoryPage
from mailwatch.store import sync_claims
from mailwatch.store._errors import is_database_unavailable
from mailwatch.sync.backoff import BackoffPolicy
from mailwatch.store.mailboxes import mark_notifications_missed
from mailwatch.sync.history_events import (
    events_from_history, labels_needed, last_changes, message_ids, newest_history_id,
)
from mailwatch.sync.metadata import with_metadata
from mailwatch.sync.warnings import notifications_missed_event
from mailwatch.workers.claiming import ClaimingWorker
from mailwatch.workers.outcome import failure_of

log = logging.getLogger(__name__)

# Extra history.list calls one page may spend to trace a message's labels back to it.
LOOKAHEAD_LISTINGS = 3

SYNC_OUTCOMES = Counter("mailwatch_syncs_total", "Mailbox syncs by outcome", ["outcome"])
SYNC_EVENTS = Counter("mailwatch_sync_events_total", "Change events written by sync")
SYNC_SECONDS = Histogram("mailwatch_sync_seconds", "Time to sync one mailbox")
SYNC_BEHIND_NOTIFICATION = Counter(
    "mailwatch_sync_behind_notification_total",
    "Syncs that ended short of a notified history id Gmail's history did not show yet (looked at again later)",
)
SUSPICIOUS_NOTIFICATIONS = Counter(
    "mailwatch_suspicious_notifications_total",
    "Notified history ids still beyond Gmail's own history after the bounded catch-up: dropped",
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

HISTORY_SKIPPED = Counter(
    "mailwatch_history_records_skipped_total",
    "History records skipped after repeated failures (poison history), by cause",
    ["cause"],
)


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
        self.catch_up_backoff = catch_up_backoff
        self.catch_up_attempts = catch_up_attempts
        self.poison_after = poison_after

    async def claim(self, session: AsyncSession, now: datetime, limit: int) -> list[sync_claims.ClaimedMailbox]:
        """Lease due mailboxes to this worker's owner name."""
        return await sync_claims.claim_due_syncs(session, owner=self.owner, now=now, lease=self.lease, limit=limit)

    async def process(self, claim: sync_claims.ClaimedMailbox) -> str:
        done = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lease(claim.mailbox, done))
        try:
            return await self.sync_claimed(claim)
        finally:
            # Told to stop, not cancelled: a cancel landing mid-statement would leave
            # its pooled connection to the garbage collector, still open.
            done.set()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _keep_lease(self, mailbox: Mailbox, done: asyncio.Event) -> None:
        """Extend the claim every third of the lease while the sync works (until `done`),
        so a long sync or resync is not taken over by another replica. Fenced on the
        owner: once the claim is released or lost, extending does nothing and the
        heartbeat stops."""
        interval = self.lease.total_seconds() / 3
        while True:
            try:
                await asyncio.wait_for(done.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                async with self.sessions() as session, session.begin():
                    kept = await sync_claims.extend_lease(
                        session, mailbox.id, owner=self.owner, now=self.clock.now(), lease=self.lease
                    )
            except Exception:  # noqa: BLE001 - a missed beat only shortens the margin
                log.warning("could not extend the lease on mailbox %s", mailbox.id, exc_info=True)
                continue
            if not kept:
                return

    async def sync_claimed(self, claim: sync_claims.ClaimedMailbox) -> str:
        mailbox = claim.mailbox
        credential: Credential | None = None
        try:
            credential = self.secret_box.decrypt_credential(claim.credentials_ciphertext)
            if mailbox.page_failures >= self.poison_after and mailbox.history_id is not None:
                await self._sync_record_by_record(mailbox, credential)
            else:
                await self._sync_history(mailbox, credential)
            return "synced"
        except errors.GmailHistoryExpired:
            return await self._resync(mailbox, credential)
        except sync_claims.LeaseLost:
            log.warning("lease on mailbox %s lost; another worker took it over", mailbox.id)
            return "lease_lost"
        except Exception as exc:  # noqa: BLE001 - one mailbox's failure must not stop the others
            if not isinstance(exc, errors.MailwatchError):
                log.exception("sync of mailbox %s failed unexpectedly", mailbox.id)
            return await self._failed(mailbox, credential, exc)

    async def _sync_history(self, mailbox: Mailbox, credential: Credential) -> None:
        synced = mailbox.history_id
        if synced is None:  # never watched successfully: nothing to page from
            raise errors.GmailHistoryExpired("mailbox has no history id yet")
        page_token: str | None = None
        first_page_history_id: int | None = None
        ahead: list[tuple[str, HistoryPage]] = []  # listed past the current page, not yet written
        known: dict[str, MessageLabels | None] = {}
        while True:
            if ahead:
                page_token, page = ahead.pop(0)
            else:
                page = await self._history_page(mailbox, credential, page_token)
            page = await self._label_history(mailbox, credential, page_token, page, ahead, known)
            if first_page_history_id is None:
                first_page_history_id = page.history_id
            final = page.next_page_token is None
            if final:
                new_history_id = max(synced, newest_history_id(first_page_history_id, page.records))
            else:
                new_history_id = max([synced, *(int(r["id"]) for r in page.records)])
            events = await self._events(
                mailbox, credential, page.records, known,
                later_records=[record for _, later in ahead for record in later.records],
            )
            missed = notifications_missed_event(mailbox, events) if synced == mailbox.history_id else None
            if missed is not None:
                events = [missed, *events]
            catch_up = self._catch_up(mailbox)
            async with self.sessions() as session, self._page_transaction(session, missed, catch_up):
                committed = await sync_claims.commit_sync_page(
                    session, mailbox, owner=self.owner, expected_history_id=synced,
                    new_history_id=new_history_id, events=events, final=final,
                    now=self.clock.now(), lease=self.lease, **catch_up,
                )
                if missed is not None:
                    await mark_notifications_missed(session, mailbox.id)
            self._report_catch_up(mailbox, committed, new_history_id)
            SYNC_EVENTS.inc(len(events))
            synced = new_history_id
            if final:
                return
            page_token = page.next_page_token

    @contextlib.asynccontextmanager
    async def _page_transaction(self, session: AsyncSession, missed: NewEvent | None, catch_up: dict):
        """A page's commit is usually ONE statement (`commit_sync_page`), run in
        autocommit: its locks end as Postgres finishes it, with no BEGIN or COMMIT
        round trip (while the mailbox row is locked, ingest batches naming it wait).
        The rare pages that write more (NOTIFICATIONS_MISSED's mark, a give-up page)
        run in a transaction."""
        if missed is None and not catch_up["give_up_catch_up"]:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield
        else:
            async with session.begin():
                yield

    async def _events(
        self, mailbox: Mailbox, credential: Credential, records: list[dict],
        known: dict[str, MessageLabels | None], *, later_records: list[dict],
    ) -> list[NewEvent]:
        """The records' change events, with message metadata for a mailbox that wants it."""
        events = events_from_history(
            records, mailbox_id=mailbox.id, email_address=mailbox.email_address,
            label_filter=mailbox.label_filter, known_labels=known, later_records=later_records,
        )
        return await with_metadata(self.gmail, credential, mailbox, events, known)

    async def _fetch_labels(
        self, mailbox: Mailbox, credential: Credential, needed: list[str], known: dict[str, MessageLabels | None],
    ) -> None:
        """Ask Gmail for the labels (and metadata, if wanted) of `needed` into `known`."""
        if needed:
            known.update(await self.gmail.message_labels(
                credential, mailbox.email_address, list(dict.fromkeys(needed)), tenant_id=mailbox.tenant_id,
                metadata_headers=mailbox.metadata_headers,
            ))

    async def _sync_record_by_record(self, mailbox: Mailbox, credential: Credential) -> None:
        """Poison history: the page at the mailbox's history id failed `poison_after` times.

        Its records are processed and committed one at a time (the failure count
        moves along with them); a record that raises is skipped with a
        HISTORY_SKIPPED event in the same transaction as the history id that
        passes it. If the count grew past the bound, the worker was lost on the
        first record left (a lost worker cannot be caught): that one is skipped
        without trying again. The page's last record ends the count, and the rest
        of the history syncs as usual (a failure there is a new page's).
        """
        page = await self._history_page(mailbox, credential, None)
        synced = mailbox.history_id
        lost_on_first = mailbox.page_failures > self.poison_after
        for index, record in enumerate(page.records):
            record_id = max(synced, int(record["id"]))
            later = page.records[index + 1:]
            keep_count = bool(later)
            if index == 0 and lost_on_first:
                await self._skip_record(mailbox, synced, record, keep_count, cause="worker_lost",
                                        error="the sync worker was lost while processing it")
                synced = record_id
                continue
            try:
                known: dict[str, MessageLabels | None] = {}
                await self._fetch_labels(mailbox, credential, labels_needed([record], mailbox.label_filter), known)
                events = await self._events(mailbox, credential, [record], known, later_records=later)
                await self._commit_record(mailbox, synced, record_id, events, keep_count)
            except (errors.MailwatchError, sync_claims.LeaseLost):
                raise  # Gmail's answers and a lost lease have their own handling
            except Exception as exc:  # noqa: BLE001 - this record is the poison: skip it, keep the rest
                if is_database_unavailable(exc):
                    raise
                await self._skip_record(mailbox, synced, record, keep_count, cause="exception",
                                        error=f"{type(exc).__name__}: {exc}")
            synced = record_id
        await self._sync_history(replace(mailbox, history_id=synced), credential)

    async def _commit_record(
        self, mailbox: Mailbox, synced: int, record_id: int, events: list[NewEvent], keep_count: bool,
    ) -> None:
        async with self.sessions() as session, session.begin():
            await sync_claims.commit_sync_page(
                session, mailbox, owner=self.owner, expected_history_id=synced, new_history_id=record_id,
                events=events, final=False, now=self.clock.now(), lease=self.lease, keep_page_failures=keep_count,
            )

    async def _skip_record(
        self, mailbox: Mailbox, synced: int, record: dict, keep_count: bool, *, cause: str, error: str,
    ) -> None:
        """Pass `record` with a HISTORY_SKIPPED event naming its message ids (one transaction)."""
        ids = message_ids(record)
        event = NewEvent(
            mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.HISTORY_SKIPPED,
            history_id=int(record["id"]),
            detail={"reason": "PROCESSING_FAILED" if cause == "exception" else "WORKER_LOST",
                    # Text jsonb can hold, whatever the failure said: the skip must commit.
                    "message_ids": storable_text(",".join(ids)), "error": storable_text(error[:500]),
                    "attempts": str(mailbox.page_failures)},
        )
        await self._commit_record(mailbox, synced, max(synced, int(record["id"])), [event], keep_count)
        HISTORY_SKIPPED.labels(cause=cause).inc()
        log.error(
            "poison history: skipped history record %s of mailbox %s after %d failed attempts (%s); "
            "its messages get no change events: %s",
            record["id"], mailbox.id, mailbox.page_failures, error, ", ".join(ids) or "(none named)",
            extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)},
        )

    async def _history_page(self, mailbox: Mailbox, credential: Credential, page_token: str | None) -> HistoryPage:
        return await self.gmail.history_page(
            credential, mailbox.email_address, start_history_id=mailbox.history_id, page_token=page_token,
            tenant_id=mailbox.tenant_id,
        )

    async def _label_history(
        self, mailbox: Mailbox, credential: Credential, page_token: str | None, page: HistoryPage,
        ahead: list[tuple[str, HistoryPage]], known: dict[str, MessageLabels | None],
    ) -> HistoryPage:
        """Fetch the labels the page's events need (into `known`) and list far enough ahead
        (into `ahead`) that labels fetched after a later change can be traced back to the page.

        A message asked about may have changed after the last record listed; then
        the following page is listed, or, at the end of the listing, the last page
        is listed again (it now reaches the change). Past LOOKAHEAD_LISTINGS such
        messages are reported rather than guessed (see history_events).
        """
        for attempt in range(LOOKAHEAD_LISTINGS + 1):
            window = [page, *(later for _, later in ahead)]
            changed_at = last_changes(record for p in window for record in p.records)
            needed = [i for p in window for i in labels_needed(p.records, mailbox.label_filter)
                      if i not in known or (known[i] is not None and known[i].history_id < changed_at[i])]
            await self._fetch_labels(mailbox, credential, needed, known)
            listed_through = max((int(r["id"]) for p in window for r in p.records), default=0)
            relevant = {i for p in window[:1] for i in labels_needed(p.records, mailbox.label_filter)}
            newest = max((known[i].history_id for i in relevant if known.get(i) is not None), default=0)
            if newest <= listed_through or attempt == LOOKAHEAD_LISTINGS:
                return page
            last_token, last = ahead[-1] if ahead else (page_token, page)
            if last.next_page_token:
                ahead.append((last.next_page_token, await self._history_page(mailbox, credential, last.next_page_token)))
            elif ahead:
                ahead[-1] = (last_token, await self._history_page(mailbox, credential, last_token))
            else:
                page = await self._history_page(mailbox, credential, page_token)
        return page

    async def _resync(self, mailbox: Mailbox, credential: Credential) -> str:
        """History older than Gmail keeps: take a full-sync baseline and say so."""
        try:
            # getProfile counts the messages: walking messages.list (5 units and a round
            # trip per 500) only to count them made a large mailbox's resync outlive its lease.
            profile = await self.gmail.profile(credential, mailbox.email_address, tenant_id=mailbox.tenant_id)
            message_count = profile.messages_total
        except errors.MailwatchError as exc:
            return await self._failed(mailbox, credential, exc)
        common = dict(mailbox_id=mailbox.id, email_address=mailbox.email_address)
        events = [
            NewEvent(type=EventType.RESYNC_REQUIRED, history_id=mailbox.history_id,
                     detail={"reason": "HISTORY_EXPIRED", "from_history_id": str(mailbox.history_id)}, **common),
            NewEvent(type=EventType.RESYNCED, history_id=profile.history_id,
                     detail={"baseline_history_id": str(profile.history_id), "message_count": str(message_count)},
                     **common),
        ]
        try:
            async with self.sessions() as session, session.begin():
                committed = await sync_claims.commit_sync_page(
                    session, mailbox, owner=self.owner, expected_history_id=mailbox.history_id,
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
        async with self.sessions() as session, session.begin():
            if failure.terminal is None:
                backoff_at = self.backoff.next_attempt_at(now, mailbox.sync_attempts + 1)
                await sync_claims.record_sync_failure(
                    session, mailbox, owner=self.owner, reason=failure.reason, message=failure.message,
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
            marked = await sync_claims.mark_terminal(
                session, mailbox, owner=self.owner, state=state, reason=failure.reason, message=failure.message,
                now=now, event=event,
            )
        if marked:
            log.warning("mailbox %s is now %s: %s", mailbox.id, state.value, failure.message,
                        extra={"tenant_id": str(mailbox.tenant_id), "mailbox_id": str(mailbox.id)})
        return failure.outcome
