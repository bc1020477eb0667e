"""A registration's backfill in Postgres (`mailbox_backfills`, `backfill_messages`).

- `request_backfills`: store (or keep, when the same request is stored) a
  mailbox's backfill, in the registration's transaction or on its own;
- `claim_backfills` / `extend_lease` / `release`: the worker's claim, with a
  lease (`UPDATE … WHERE … IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`, as
  the sync claims), so a killed worker's backfill is taken over;
- `save_listing`: the listed ids, oldest first, and the move to DELIVERING in
  one transaction (a restart neither lists again nor reorders);
- `deliver_batch`: one batch's MESSAGE_EXISTING events and the progress pointer
  in one transaction, decided against what the live sync has committed (read
  without the tenant's writer lock, from where the previous batch stopped reading
  (`LiveLog`), and checked again under the lock in the append);
- `progresses`: GetMailbox's and ListMailboxes' view.

Every write under a claim is fenced on the lease owner and the backfill's generation
(bumped when another request replaces it), and the delivery on the position it started
from: a worker that lost its claim, or runs a replaced backfill, commits nothing.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from sqlalchemy import DateTime, Text, and_, any_, bindparam, cast, delete, exists, func, insert, or_, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY, psycopg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.backfill import BackfillProgress, BackfillRequest, BackfillState
from mailwatch.domain.models import EventType, Mailbox, MailboxState, NewEvent, SealedCredential
from mailwatch.store import sealed_credentials
from mailwatch.store.changes import append_events, driver_connection, update_and_append, writer_lock
from mailwatch.store.claims import ERROR_TEXT_LIMIT, gmail_allows
from mailwatch.store.db import Sessions, autocommit, compiled_for_driver, driver_autocommit, reading, transaction
from mailwatch.store.mailboxes import COLUMNS, to_mailbox
from mailwatch.store.models import backfill_messages, change_events, mailbox_backfills, mailboxes


class LeaseLost(Exception):
    """The backfill's claim lapsed (or the backfill was replaced): drop the work."""


class MailboxNotActive(Exception):
    """The mailbox is no longer ACTIVE (stopped): its backfill waits, delivering nothing."""


@dataclass(frozen=True)
class BackfillJob:
    mailbox_id: uuid.UUID
    tenant_id: uuid.UUID
    request: BackfillRequest
    state: BackfillState
    start_sequence: int
    listed: int
    next_position: int
    delivered: int
    skipped: int
    attempts: int
    generation: int = 0  # which request of the mailbox this is (bumped when another replaces it)


@dataclass(frozen=True)
class ClaimedBackfill:
    job: BackfillJob
    mailbox: Mailbox
    credential: SealedCredential


@dataclass(frozen=True)
class ListedMessage:
    position: int  # 0 is the oldest
    message_id: str
    thread_id: str | None


@dataclass(frozen=True)
class LiveEvent:
    """A change event the log already holds for a listed message (since the backfill was requested)."""

    type: EventType
    history_id: int | None


@dataclass
class LiveLog:
    """The backfilled mailbox's events in the log since the backfill was requested, as far as
    read (`through`, a log position): each batch reads only what the log gained since the one
    before (the log is append-only), so a backfill reads the tenant's log since its start once
    in all, not once per batch. Kept by the caller across its batches and claims of the same
    backfill (`for_job`)."""

    backfill: tuple[uuid.UUID, int, int]  # mailbox id, generation, start sequence
    through: int
    events: dict[str, list[LiveEvent]] = field(default_factory=dict)

    @classmethod
    def for_job(cls, job: "BackfillJob", kept: "LiveLog | None" = None) -> "LiveLog":
        """`kept` if it was read for this very backfill, else a new one from its start."""
        backfill = (job.mailbox_id, job.generation, job.start_sequence)
        if kept is not None and kept.backfill == backfill:
            return kept
        return cls(backfill, job.start_sequence)

    def of(self, message_ids: Sequence[str]) -> dict[str, list[LiveEvent]]:
        return {message_id: self.events[message_id] for message_id in message_ids if message_id in self.events}


@dataclass(frozen=True)
class Delivery:
    """What a batch appends and how far it moves the pointer."""

    events: list[NewEvent]
    consumed: int  # listed positions passed (delivered or skipped)
    skipped: int


@dataclass(frozen=True)
class Delivered:
    delivered: int
    skipped: int
    completed: bool
    writer_lock_seconds: float = 0.0  # how long the batch held the tenant's writer lock (to its commit)


def _job(row) -> BackfillJob:
    return BackfillJob(
        mailbox_id=row.mailbox_id, tenant_id=row.tenant_id,
        request=BackfillRequest(since=row.since, newest=row.newest, label_ids=tuple(row.label_ids)),
        state=BackfillState(row.state), start_sequence=row.start_sequence, listed=row.listed,
        next_position=row.next_position, delivered=row.delivered, skipped=row.skipped, attempts=row.attempts,
        generation=row.generation,
    )


async def request_backfills(
    session: AsyncSession, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID], request: BackfillRequest,
) -> None:
    """Store `request` as the backfill of each mailbox, in the caller's transaction.

    A mailbox whose stored backfill has the same request keeps it as it stands
    (retrying a registration must not deliver its messages twice); another
    request replaces it from the start (its listed ids go; a worker holding the
    old one loses its claim). Live MESSAGE_ADDED events are told apart from
    after the tenant's log position at this moment (`start_sequence`).
    """
    if not mailbox_ids:
        return
    # One log position for the whole batch, read before the registration's own events.
    start_sequence = (await session.execute(
        select(func.coalesce(func.max(change_events.c.sequence), 0)).where(change_events.c.tenant_id == tenant_id)
    )).scalar_one()
    statement = pg_insert(mailbox_backfills).values([
        {"mailbox_id": mailbox_id, "tenant_id": tenant_id, "since": request.since, "newest": request.newest,
         "label_ids": list(request.label_ids), "start_sequence": start_sequence}
        for mailbox_id in mailbox_ids
    ])
    new = statement.excluded
    same_request = and_(
        mailbox_backfills.c.since.is_not_distinct_from(new.since),
        mailbox_backfills.c.newest.is_not_distinct_from(new.newest),
        mailbox_backfills.c.label_ids == new.label_ids,
    )
    replaced = (await session.execute(statement.on_conflict_do_update(
        index_elements=[mailbox_backfills.c.mailbox_id],
        set_=dict(
            since=new.since, newest=new.newest, label_ids=new.label_ids, state=BackfillState.LISTING.value,
            start_sequence=new.start_sequence, listed=0, next_position=0, delivered=0, skipped=0,
            due_at=func.now(), attempts=0, generation=mailbox_backfills.c.generation + 1, lease_owner=None, lease_expires_at=None, last_error=None,
            last_error_reason=None, last_error_at=None, completed_at=None, created=func.now(), updated=func.now(),
        ),
        where=~same_request,
    ).returning(mailbox_backfills.c.mailbox_id))).scalars().all()
    if replaced:
        await session.execute(delete(backfill_messages).where(
            backfill_messages.c.tenant_id == tenant_id, backfill_messages.c.mailbox_id.in_(replaced)))


async def request_backfill(sessions: Sessions, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID],
                           request: BackfillRequest) -> None:
    """`request_backfills` in a transaction of its own (a registration that wrote nothing)."""
    async with transaction(sessions) as session:
        await request_backfills(session, tenant_id, mailbox_ids, request)


def _claimable(now: datetime):
    return (
        mailbox_backfills.c.state != BackfillState.COMPLETED.value,  # (the due index's predicate)
        mailbox_backfills.c.state != BackfillState.FAILED.value,
        mailbox_backfills.c.due_at <= now,
        or_(mailbox_backfills.c.lease_expires_at.is_(None), mailbox_backfills.c.lease_expires_at < now),
    )


async def any_due(sessions: Sessions, *, now: datetime) -> bool:
    """Whether some unfinished backfill is due and unleased at `now`: one statement on the
    driver pool, compiled once. Most ticks of the backfill worker find nothing (backfills
    are rare), and this costs a tenth of the claim's transaction through an ORM session."""
    sql, compiled = _compiled_any_due()
    async with driver_autocommit(sessions) as connection:
        row = await (await connection.execute(sql, compiled.construct_params({"p_now": now}))).fetchone()
    return bool(row[0])


@functools.cache
def _compiled_any_due():
    return compiled_for_driver(select(exists().where(*_claimable(bindparam("p_now", type_=DateTime(timezone=True))))))


async def claim_backfills(
    sessions: Sessions, *, owner: str, now: datetime, lease: timedelta, limit: int,
    skip_tenants: Sequence[uuid.UUID] = (),
) -> list[ClaimedBackfill]:
    """Lease up to `limit` due, unfinished backfills of ACTIVE mailboxes Gmail does not
    hold back (earliest due first; none of `skip_tenants`, past their Gmail budget).
    Nothing due (`any_due`): no transaction at all."""
    if not await any_due(sessions, now=now):
        return []
    due = (
        select(mailbox_backfills.c.mailbox_id)
        .select_from(mailbox_backfills.join(mailboxes, mailboxes.c.id == mailbox_backfills.c.mailbox_id))
        .where(*_claimable(now), mailboxes.c.state == MailboxState.ACTIVE.value, gmail_allows(now),
               mailbox_backfills.c.tenant_id.not_in(list(skip_tenants)))
        .order_by(mailbox_backfills.c.due_at)
        .limit(limit)
        .with_for_update(of=mailbox_backfills, skip_locked=True)
    )
    async with transaction(sessions) as session:
        claimed = (await session.execute(
            update(mailbox_backfills)
            .where(mailbox_backfills.c.mailbox_id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + lease)
            .returning(*mailbox_backfills.c)
        )).all()
        if not claimed:
            return []
        rows = {row.id: row for row in (await session.execute(
            select(*COLUMNS).where(mailboxes.c.id.in_([row.mailbox_id for row in claimed]))
        ))}
        stored = {}
        for tenant_id in {row.tenant_id for row in claimed}:
            stored.update(await sealed_credentials.load_stored(
                session, tenant_id, [row.mailbox_id for row in claimed if row.tenant_id == tenant_id]))
        # A mailbox stopped between the claim's UPDATE and these reads (StopMailbox does not wait
        # for the claim's lock on the backfill) has no credential any more: its claim is given
        # back, and it is not claimed again while STOPPED.
        stopped = [row.mailbox_id for row in claimed if row.mailbox_id not in stored]
        if stopped:
            await session.execute(update(mailbox_backfills).where(mailbox_backfills.c.mailbox_id.in_(stopped))
                                  .values(lease_owner=None, lease_expires_at=None))
    return [ClaimedBackfill(_job(row), to_mailbox(rows[row.mailbox_id]), stored[row.mailbox_id])
            for row in claimed if row.mailbox_id in stored]


def _owned(job: BackfillJob, owner: str):
    """The job's row while `owner` holds its claim and it is still the same request (an owner
    string is per process: a replaced backfill re-claimed by this process has the same one)."""
    return and_(mailbox_backfills.c.mailbox_id == job.mailbox_id, mailbox_backfills.c.lease_owner == owner,
                mailbox_backfills.c.generation == job.generation)


async def extend_lease(sessions: Sessions, job: BackfillJob, *, owner: str, now: datetime,
                       lease: timedelta) -> bool:
    """Heartbeat: False once `owner` no longer holds the claim."""
    async with autocommit(sessions) as session:
        result = await session.execute(
            update(mailbox_backfills).where(_owned(job, owner)).values(lease_expires_at=now + lease))
    return result.rowcount == 1


async def release(sessions: Sessions, job: BackfillJob, *, owner: str, due_at: datetime, now: datetime,
                  failure: tuple[str, str] | None = None) -> None:
    """End the claim; the backfill is due again at `due_at`. With `failure` (reason,
    message), it is recorded (GetMailbox) and counted for the backoff."""
    values: dict = dict(lease_owner=None, lease_expires_at=None, due_at=due_at, updated=now)
    if failure is not None:
        reason, message = failure
        values.update(attempts=mailbox_backfills.c.attempts + 1, last_error_reason=reason,
                      last_error=message[:ERROR_TEXT_LIMIT], last_error_at=now)
    async with autocommit(sessions) as session:
        await session.execute(update(mailbox_backfills).where(_owned(job, owner)).values(**values))


async def save_listing(sessions: Sessions, job: BackfillJob, *, owner: str,
                       listed: Sequence[tuple[str, str | None]], now: datetime) -> BackfillJob:
    """Store the listed (message id, thread id) pairs, oldest first, and move to DELIVERING:
    one transaction, fenced on the claim."""
    async with transaction(sessions) as session:
        moved = await session.execute(
            update(mailbox_backfills)
            .where(_owned(job, owner), mailbox_backfills.c.state == BackfillState.LISTING.value)
            .values(state=BackfillState.DELIVERING.value, listed=len(listed), updated=now)
        )
        if moved.rowcount != 1:
            raise LeaseLost(str(job.mailbox_id))
        if listed:
            await session.execute(insert(backfill_messages), [
                {"tenant_id": job.tenant_id, "mailbox_id": job.mailbox_id, "position": position,
                 "message_id": message_id, "thread_id": thread_id}
                for position, (message_id, thread_id) in enumerate(listed)
            ])
    return BackfillJob(**{**job.__dict__, "state": BackfillState.DELIVERING, "listed": len(listed)})


async def listed_messages(sessions: Sessions, job: BackfillJob, *, limit: int) -> list[ListedMessage]:
    """The next `limit` listed messages from the job's pointer, oldest first."""
    async with reading(sessions) as session:
        rows = await session.execute(
            select(backfill_messages.c.position, backfill_messages.c.message_id, backfill_messages.c.thread_id)
            .where(backfill_messages.c.tenant_id == job.tenant_id, backfill_messages.c.mailbox_id == job.mailbox_id,
                   backfill_messages.c.position >= job.next_position)
            .order_by(backfill_messages.c.position)
            .limit(limit)
        )
        return [ListedMessage(*row) for row in rows]


# How many times a batch is decided again when a live change of one of its messages
# commits between its reads and its append; past that it waits like a batch behind the sync.
CONFLICT_ATTEMPTS = 3


async def _read_log(sessions: Sessions, job: BackfillJob, live: LiveLog) -> tuple[int | None, int]:
    """Without any lock, in one statement (one snapshot): the mailbox's synced history id,
    the tenant's log position `seen`, and into `live` the mailbox's events past
    `live.through` (all of them up to `seen`: per tenant, sequence order is commit order;
    the range is on the log's (tenant_id, sequence) index). MailboxNotActive if it is not
    ACTIVE."""
    seen = (select(func.coalesce(func.max(change_events.c.sequence), 0))
            .where(change_events.c.tenant_id == job.tenant_id).scalar_subquery())
    gained = (select(change_events.c.message_id, change_events.c.event_type,
                     change_events.c.history_id, change_events.c.sequence)
              .where(change_events.c.tenant_id == job.tenant_id, change_events.c.sequence > live.through,
                     change_events.c.mailbox_id == job.mailbox_id, change_events.c.message_id.is_not(None))
              .lateral("gained"))
    async with autocommit(sessions) as session:
        rows = (await session.execute(
            select(mailboxes.c.history_id, mailboxes.c.state, seen.label("seen"), gained.c.message_id,
                   gained.c.event_type, gained.c.history_id.label("event_history_id"))
            .select_from(mailboxes.outerjoin(gained, true()))
            .where(mailboxes.c.id == job.mailbox_id)
            .order_by(gained.c.sequence)
        )).all()
    if not rows or rows[0].state != MailboxState.ACTIVE.value:
        raise MailboxNotActive(str(job.mailbox_id))
    for row in rows:
        if row.message_id is not None:
            live.events.setdefault(row.message_id, []).append(
                LiveEvent(EventType(row.event_type), row.event_history_id))
    live.through = max(live.through, rows[0].seen)
    return rows[0].history_id, live.through


def _claim_and_lock_writers(job: BackfillJob, owner: str):
    """One statement: the backfill's row, locked while `owner` holds it at the job's pointer,
    then (only if it is) the tenant's writer lock (`changes.writer_lock`), held to the
    commit. Lock order is every writer's: row locks, then the writer lock; the CTE locks the
    row before the outer query takes the writer lock for it. No row: the claim is lost."""
    claimed = (select(mailbox_backfills.c.mailbox_id)
               .where(_owned(job, owner), mailbox_backfills.c.next_position == job.next_position,
                      mailbox_backfills.c.state == BackfillState.DELIVERING.value)
               .with_for_update().cte("claimed").prefix_with("MATERIALIZED"))
    return select(writer_lock(job.tenant_id)).select_from(claimed)


def _guarded_update(job: BackfillJob, values: dict, message_ids: Sequence[str], seen: int) -> tuple[str, dict]:
    """The pointer's UPDATE … RETURNING (SQL in the driver's style, and its parameters), which
    updates nothing when the mailbox is no longer ACTIVE or the log has an event of one of
    `message_ids` past `seen`: the decision was made on reads a live commit has overtaken."""
    overtaken = select(change_events.c.sequence).where(
        change_events.c.tenant_id == job.tenant_id, change_events.c.mailbox_id == job.mailbox_id,
        change_events.c.message_id == any_(cast(list(message_ids), ARRAY(Text))),
        change_events.c.sequence > seen,
    )
    active = select(mailboxes.c.state).where(mailboxes.c.id == job.mailbox_id).scalar_subquery()
    statement = (update(mailbox_backfills)
                 .where(mailbox_backfills.c.mailbox_id == job.mailbox_id, active == MailboxState.ACTIVE.value,
                        ~exists(overtaken))
                 .values(**values).returning(mailbox_backfills.c.mailbox_id))
    compiled = statement.compile(dialect=psycopg.dialect())
    return compiled.string, compiled.construct_params()


class _Overtaken(Exception):
    """A live commit touched the batch between its reads and its append: decide again."""


async def deliver_batch(
    sessions: Sessions, job: BackfillJob, mailbox: Mailbox, *, owner: str, message_ids: Sequence[str],
    decide: Callable[[int | None, dict[str, list[LiveEvent]]], Delivery],
    completed_event: Callable[[int, int, int], NewEvent], now: datetime, live: LiveLog | None = None,
) -> tuple[BackfillJob, Delivered]:
    """One batch: `decide(synced history id, the log's events of `message_ids` since the
    backfill was requested)` says what to append and how far the pointer moves; the events
    and the new pointer commit together, fenced on the claim (owner, generation, pointer):
    LeaseLost otherwise. When the pointer reaches the end, the backfill completes with
    `completed_event(listed, delivered, skipped)`. A mailbox no longer ACTIVE (stopped since
    the claim) gets nothing: `MailboxNotActive`. `live`: the caller's LiveLog of this
    backfill, which the batch reads on from (a new one reads the log from the start).

    Why this is exactly once against the live sync, with the tenant's writer lock
    (`changes.writer_lock`) held only for the append and its commit: the history id and
    the log are read without it, at log position `seen`, and decided on. Then the backfill's
    row and the writer lock are taken and, in one statement (its snapshot taken after the
    lock: every live commit of the tenant is either in it or waits for this one), the
    pointer moves and the events are appended only if the log has no event of the batch's
    messages past `seen` and the mailbox is still ACTIVE. A live commit that overtook the
    reads is seen and the batch is decided again on fresh reads (at most CONFLICT_ATTEMPTS
    times; then nothing moves and the caller waits as for the sync). The mailbox's history
    id and its events commit in one statement, so `decide` delivers only messages whose last
    change is at or below the history id read: the live sync has passed their MESSAGE_ADDED
    (if they had one after the watch, it is in the log and the message is skipped) and any
    later change of theirs is an event the guard sees.
    """
    live = LiveLog.for_job(job, live)
    for _ in range(CONFLICT_ATTEMPTS):
        synced, seen = await _read_log(sessions, job, live)
        delivery = decide(synced, live.of(message_ids))
        position = job.next_position + delivery.consumed
        delivered = job.delivered + len(delivery.events)
        skipped = job.skipped + delivery.skipped
        completed = position >= job.listed
        values: dict = dict(next_position=position, delivered=delivered, skipped=skipped, updated=now,
                            attempts=0, last_error=None, last_error_reason=None, last_error_at=None)
        events = list(delivery.events)
        if completed:
            values.update(state=BackfillState.COMPLETED.value, completed_at=now, lease_owner=None,
                          lease_expires_at=None)
            events.append(completed_event(job.listed, delivered, skipped))
        try:
            async with transaction(sessions) as session:
                if (await session.execute(_claim_and_lock_writers(job, owner))).first() is None:
                    raise LeaseLost(str(job.mailbox_id))
                locked_at = time.perf_counter()
                sql, params = _guarded_update(job, values, message_ids, seen)
                if not await update_and_append(await driver_connection(session), sql, params, job.tenant_id, events):
                    raise _Overtaken()
                if completed:
                    await session.execute(delete(backfill_messages).where(
                        backfill_messages.c.tenant_id == job.tenant_id,
                        backfill_messages.c.mailbox_id == job.mailbox_id))
        except _Overtaken:
            continue
        held = time.perf_counter() - locked_at
        moved = BackfillJob(**{**job.__dict__, "next_position": position, "delivered": delivered,
                               "skipped": skipped, "state": BackfillState.COMPLETED if completed else job.state})
        return moved, Delivered(len(delivery.events), delivery.skipped, completed, held)
    return job, Delivered(0, 0, False)


async def fail(sessions: Sessions, job: BackfillJob, *, owner: str, reason: str, message: str,
               completed_event: Callable[[int, int, int], NewEvent], now: datetime) -> bool:
    """End the backfill as FAILED (Gmail refused its request for good): the state, the
    error, its listed ids gone and `completed_event(listed, delivered, skipped)`, in one
    transaction fenced on the claim. False when the claim was lost."""
    async with transaction(sessions) as session:
        ended = await session.execute(
            update(mailbox_backfills).where(_owned(job, owner)).values(
                state=BackfillState.FAILED.value, completed_at=now, lease_owner=None, lease_expires_at=None,
                last_error_reason=reason, last_error=message[:ERROR_TEXT_LIMIT], last_error_at=now, updated=now,
            )
        )
        if ended.rowcount != 1:
            return False
        await session.execute(delete(backfill_messages).where(
            backfill_messages.c.tenant_id == job.tenant_id, backfill_messages.c.mailbox_id == job.mailbox_id))
        await append_events(session, job.tenant_id, [completed_event(job.listed, job.delivered, job.skipped)])
    return True


async def request_sync(sessions: Sessions, mailbox_id: uuid.UUID, *, now: datetime) -> bool:
    """Make the mailbox due for a sync (unless it is already): a backfill waits for the
    live sync to pass a message's last change. True when it was not due yet."""
    async with autocommit(sessions) as session:
        result = await session.execute(
            update(mailboxes)
            .where(mailboxes.c.id == mailbox_id, mailboxes.c.sync_due_at.is_(None),
                   mailboxes.c.state == MailboxState.ACTIVE.value)
            .values(sync_due_at=now)
        )
    return result.rowcount == 1


async def progresses(sessions: Sessions, tenant_id: uuid.UUID,
                     mailbox_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, BackfillProgress]:
    """The backfills of `mailbox_ids` as GetMailbox and ListMailboxes show them (those with none left out)."""
    if not mailbox_ids:
        return {}
    async with reading(sessions) as session:
        rows = await session.execute(
            select(mailbox_backfills).where(mailbox_backfills.c.tenant_id == tenant_id,
                                            mailbox_backfills.c.mailbox_id.in_(list(mailbox_ids)))
        )
        return {row.mailbox_id: BackfillProgress(
            state=BackfillState(row.state), listed=row.listed, delivered=row.delivered, skipped=row.skipped,
            created=row.created, completed_at=row.completed_at, last_error=row.last_error,
            last_error_reason=row.last_error_reason, last_error_at=row.last_error_at,
        ) for row in rows}
