"""The sync worker's claim and its fenced writes on `mailboxes`.

A claim is one statement: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
LOCKED) RETURNING`, so replicas never claim the same mailbox and a crashed
replica's claims lapse with their lease. Every write made under a claim is
fenced on (lease owner, expected history id): a replica that lost its lease
cannot commit over the one that took the mailbox over. Each verb opens its
own session and picks its transaction mode: a verb that is one statement runs
in autocommit (no BEGIN and COMMIT round trips; its row lock ends with it).
"""

from __future__ import annotations

import enum
import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger, DateTime, Integer, Text, Uuid, and_, bindparam, case, cast, or_, select, update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Compiled
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch import stages
from mailwatch.domain.models import Mailbox, MailboxState, NewEvent, SealedCredential
from mailwatch.store.changes import append_events, driver_connection, update_and_append
from mailwatch.store.db import (
    Sessions, autocommit, compiled_for_driver, driver_autocommit, fetch_compiled, transaction, uuid_array,
)
from mailwatch.store.claims import (
    FAILURE_COLUMNS, due_in_tenant_turns, failure_values, gmail_retry_values, terminal_values,
)
from mailwatch.store.mailboxes import COLUMNS, to_mailbox
from mailwatch.store.models import mailboxes
from mailwatch.store import sealed_credentials


@dataclass(frozen=True)
class ClaimedMailbox:
    mailbox: Mailbox
    credential: SealedCredential


class LeaseLost(Exception):
    """The claim lapsed and another worker owns the mailbox now; drop the work."""


def _fence(mailbox_id: uuid.UUID, owner: str, expected_history_id: int | None):
    return and_(
        mailboxes.c.id == mailbox_id,
        mailboxes.c.lease_owner == owner,
        mailboxes.c.history_id.is_not_distinct_from(expected_history_id),
    )


def _page_failures_so_far():
    """The failures counted against the page the mailbox stands at: a count kept
    for another history id is stale (the history id moved since), so 0."""
    return case(
        (mailboxes.c.page_failures_history_id.is_not_distinct_from(mailboxes.c.history_id), mailboxes.c.page_failures),
        else_=0,
    )


def _page_failed(extra=1) -> dict:
    """One more failure counted against the page the mailbox stands at."""
    return {"page_failures": _page_failures_so_far() + extra, "page_failures_history_id": mailboxes.c.history_id}


async def claim_due_syncs(
    session: AsyncSession, *, owner: str, now: datetime, lease: timedelta, limit: int,
    skip_tenants: Sequence[uuid.UUID] = (), running: Sequence[uuid.UUID] = (),
) -> list[ClaimedMailbox]:
    """Lease up to `limit` ACTIVE mailboxes whose sync is due, tenants taking turns
    (`_claim_statement`), on the caller's session; none of `skip_tenants` (past their
    Gmail quota budget: their turn comes when it refills). `running` names a tenant once
    per sync of it the worker still runs: its turns start after them."""
    rows = await session.execute(_claim_statement(), _claim_params(owner, now, lease, limit, skip_tenants, running))
    return [ClaimedMailbox(to_mailbox(row), sealed_credentials.stored_of(row)) for row in rows]


async def claim_syncs(sessions: Sessions, *, owner: str, now: datetime, lease: timedelta, limit: int,
                      skip_tenants: Sequence[uuid.UUID] = (),
                      running: Sequence[uuid.UUID] = ()) -> list[ClaimedMailbox]:
    """`claim_due_syncs` as the sync worker runs it for every claim: ONE statement in
    autocommit, compiled once and run on the driver's connection (no ORM session and
    no SQLAlchemy execution or result layer on this path)."""
    rows = await fetch_compiled(sessions, _compiled_claim(),
                                _claim_params(owner, now, lease, limit, skip_tenants, running))
    return [ClaimedMailbox(to_mailbox(row), sealed_credentials.stored_of(row)) for row in rows]


def _claim_params(owner: str, now: datetime, lease: timedelta, limit: int, skip_tenants: Sequence[uuid.UUID],
                  running: Sequence[uuid.UUID]) -> dict:
    return {"p_owner": owner, "p_now": now, "p_lease_expires_at": now + lease, "p_limit": limit,
            "p_skip_tenants": uuid_array(skip_tenants), "p_running": uuid_array(running)}


@functools.cache
def _claim_statement():
    """The claim: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`.

    Tenants take turns: each tenant's oldest due mailbox first, then each
    one's second, and so on (oldest due first within a turn), so a tenant
    whose thousands of mailboxes became due at once (a bulk registration's
    first notifications, a resync storm) does not make another tenant's one
    due mailbox wait behind all of them. Each tenant contributes at most
    `p_limit` candidates (`ix_mailboxes_sync_due` per tenant), and tenants in
    `p_skip_tenants` (past their Gmail quota budget) none. Turns carry over
    between claims: a tenant named k times in `p_running` (syncs of it the
    worker still runs) starts at turn k + 1.

    A row still naming a lease owner was claimed and never released: that
    worker was lost (killed, out of memory) with no commit and no recorded
    failure, so the attempt counts against the page (`page_failures`)."""
    now = bindparam("p_now", type_=DateTime(timezone=True))
    limit = bindparam("p_limit", type_=Integer)

    def is_due(rows):
        return (
            rows.c.sync_due_at.is_not(None),
            rows.c.sync_due_at <= now,
            rows.c.state == MailboxState.ACTIVE.value,
            or_(rows.c.lease_expires_at.is_(None), rows.c.lease_expires_at < now),
            or_(rows.c.backoff_until.is_(None), rows.c.backoff_until <= now),
            or_(rows.c.gmail_retry_at.is_(None), rows.c.gmail_retry_at <= now),
        )

    due = due_in_tenant_turns(is_due, "sync_due_at", limit=limit,
                              skip_tenants=cast(bindparam("p_skip_tenants"), ARRAY(Uuid)),
                              running=cast(bindparam("p_running"), ARRAY(Uuid)))
    return sealed_credentials.with_sealed(
        update(mailboxes)
        .where(mailboxes.c.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=bindparam("p_owner", type_=Text),
            lease_expires_at=bindparam("p_lease_expires_at", type_=DateTime(timezone=True)),
            **_page_failed(case((mailboxes.c.lease_owner.is_not(None), 1), else_=0)),
        )
        .returning(*COLUMNS, mailboxes.c.refresh_token_ciphertext)
    )


@functools.cache
def _compiled_claim() -> tuple[str, Compiled]:
    return compiled_for_driver(_claim_statement())


class CatchUp(enum.Enum):
    """How a final page left the mailbox against its highest notified history id."""

    NOT_FINAL = "not_final"  # more pages follow: nothing decided yet
    CAUGHT_UP = "caught_up"  # synced at least as far as any notification announced
    BEHIND = "behind"  # a notification announced more than Gmail's history shows: look again later
    GAVE_UP = "gave_up"  # still beyond Gmail's history after the bounded retries: not due any more


@dataclass(frozen=True)
class PageCommit:
    catch_up: CatchUp
    notified_history_id: int | None = None  # as read under the row lock (final pages)


async def extend_lease(sessions: Sessions, mailbox_id: uuid.UUID, *, owner: str, now: datetime,
                       lease: timedelta) -> bool:
    """Heartbeat: push the claim's expiry to now + lease. False when `owner` no longer
    holds it (released, or taken over after it lapsed)."""
    async with autocommit(sessions) as session:
        result = await session.execute(
            update(mailboxes)
            .where(mailboxes.c.id == mailbox_id, mailboxes.c.lease_owner == owner)
            .values(lease_expires_at=now + lease)
        )
    return result.rowcount == 1


async def commit_sync_page(
    sessions: Sessions,
    claimed: Mailbox,
    *,
    owner: str,
    expected_history_id: int | None,
    new_history_id: int,
    events: list[NewEvent],
    final: bool,
    now: datetime,
    lease: timedelta,
    catch_up_at: datetime | None = None,
    give_up_catch_up: bool = False,
    keep_page_failures: bool = False,
    notifications_missed: bool = False,
) -> PageCommit:
    """Write one page's events and the new history id: ONE statement in autocommit
    (the fenced UPDATE and the append, `changes.update_and_append`), except a
    give-up page's (`give_up_catch_up`: the notified id is read under the row lock
    first, in a transaction).

    `notifications_missed`: the events include NOTIFICATIONS_MISSED, so the
    mailbox is marked as having reported the episode (the next notification
    that arrives clears the mark).

    On the final page the claim is released and the mailbox is left due only
    if a notification announced something newer than what was synced, which
    Gmail's own answer (`new_history_id` covers history.list's `historyId`)
    says does not exist yet. That is normal for a moment (history.list may lag
    the notification), so the mailbox is looked at again at `catch_up_at`
    (default: now) and the attempt is counted in `sync_attempts`; with
    `give_up_catch_up` (the caller's bound is reached) the notified id is
    taken to be bogus: it is lowered to what Gmail showed and the mailbox is
    no longer due. Without this, a notification naming a history id Gmail
    will never reach (2^62) kept a mailbox syncing in a loop for ever.

    A committed page ends the count of failures against the page, except with
    `keep_page_failures` (a poison page worked through one record at a time):
    then the count moves along with the history id, so a worker lost on a
    later record of that page still counts against it.
    """
    started = time.perf_counter()
    try:
        return await _commit_sync_page(sessions, claimed, owner, expected_history_id, new_history_id, events, final,
                                       now, lease, catch_up_at, give_up_catch_up, keep_page_failures,
                                       notifications_missed)
    finally:
        stages.observe(stages.COMMIT, time.perf_counter() - started)


async def _commit_sync_page(sessions: Sessions, claimed: Mailbox, owner: str, expected_history_id: int | None,
                            new_history_id: int, events: list[NewEvent], final: bool, now: datetime,
                            lease: timedelta, catch_up_at: datetime | None, give_up_catch_up: bool,
                            keep_page_failures: bool, notifications_missed: bool) -> PageCommit:
    params = {"p_id": claimed.id, "p_owner": owner, "p_expected": expected_history_id,
              "p_new_history_id": new_history_id, "p_now": now, "p_lease_expires_at": now + lease,
              "p_catch_up_at": catch_up_at or now}
    shape = dict(notifications_missed=notifications_missed, keep_page_failures=keep_page_failures)
    if final and give_up_catch_up:
        async with transaction(sessions) as session:
            return await _final_page_giving_up(session, claimed, params, shape, new_history_id, events)
    async with driver_autocommit(sessions) as connection:
        if not final:
            await _update_fenced(connection, claimed, _page_update(PageEnd.MORE, **shape), params, events)
            return PageCommit(CatchUp.NOT_FINAL)
        # One statement judges and writes: an UPDATE's SET sees the row as it locked
        # it (the newest version if ingest raised notified_history_id meanwhile), so
        # the notified id judged is the one kept, as with SELECT … FOR UPDATE first,
        # for one round trip less per sync.
        [(notified_id,)] = await _update_fenced(connection, claimed, _page_update(PageEnd.FINAL, **shape), params,
                                                events)
    caught_up = notified_id is None or notified_id <= new_history_id
    return PageCommit(CatchUp.CAUGHT_UP if caught_up else CatchUp.BEHIND, notified_id)


# A failing renewal's error stays visible (GetMailbox) until a renewal succeeds.
_KEEP_RENEWAL_ERRORS = {
    column: case((mailboxes.c.renew_attempts > 0, mailboxes.c[column]), else_=None) for column in FAILURE_COLUMNS
}


class PageEnd(enum.Enum):
    """What a page's fenced UPDATE does besides moving the history id."""

    MORE = "more"  # more pages follow: the claim is kept
    FINAL = "final"  # the claim ends; due again only if still behind the notified id (RETURNING it)
    GIVE_UP = "give_up"  # the claim ends; the catch-up bound is reached: not due any more
    GIVE_UP_LOWER = "give_up_lower"  # … and the notified id beyond Gmail's history is lowered to it


_NOW = bindparam("p_now", type_=DateTime(timezone=True))
_NEW_HISTORY_ID = bindparam("p_new_history_id", type_=BigInteger)


@functools.cache
def _page_update(end: PageEnd, *, notifications_missed: bool, keep_page_failures: bool) -> tuple[str, Compiled]:
    """The fenced UPDATE … RETURNING of a page commit, one per shape, compiled once
    (building and compiling it per commit would be a fifth of the CPU per
    notification): every value is a named bind parameter (`p_*`, see
    `_commit_sync_page`), so a call only fills in its parameters."""
    values: dict = {"history_id": _NEW_HISTORY_ID, "updated": _NOW,
                    "lease_expires_at": bindparam("p_lease_expires_at", type_=DateTime(timezone=True))}
    if notifications_missed:
        values["notifications_missed_reported"] = True
    if keep_page_failures:
        values["page_failures_history_id"] = _NEW_HISTORY_ID
    else:
        values.update(page_failures=0, page_failures_history_id=None)
    returning = mailboxes.c.id
    if end is PageEnd.FINAL:
        behind = mailboxes.c.notified_history_id > _NEW_HISTORY_ID
        values.update(
            sync_due_at=case((behind, _NOW), else_=None),
            sync_attempts=case((behind, mailboxes.c.sync_attempts + 1), else_=0),
            backoff_until=case((behind, bindparam("p_catch_up_at", type_=DateTime(timezone=True))), else_=None),
            **_released(),
        )
        returning = mailboxes.c.notified_history_id
    elif end in (PageEnd.GIVE_UP, PageEnd.GIVE_UP_LOWER):
        values.update(sync_due_at=None, sync_attempts=0, backoff_until=None, **_released())
        if end is PageEnd.GIVE_UP_LOWER:
            values["notified_history_id"] = _NEW_HISTORY_ID
    fence = _fence(bindparam("p_id", type_=Uuid), bindparam("p_owner"), bindparam("p_expected", type_=BigInteger))
    return compiled_for_driver(update(mailboxes).where(fence).values(**values).returning(returning))


def _released() -> dict:
    """The columns a final page writes besides the catch-up ones: the claim ends."""
    return dict(
        lease_owner=None,
        lease_expires_at=None,
        last_sync_at=_NOW,
        gmail_retry_at=None,  # Gmail answered: any lockout is over
        **_KEEP_RENEWAL_ERRORS,
    )


async def _update_fenced(connection, claimed: Mailbox, update: tuple[str, Compiled], params: dict,
                         events: list[NewEvent]) -> list[tuple]:
    """The fenced UPDATE and the page's events, one statement (`changes.update_and_append`),
    on the driver's connection."""
    sql, compiled = update
    rows = await update_and_append(connection, sql, compiled.construct_params(params), claimed.tenant_id, events)
    if len(rows) != 1:
        raise LeaseLost(str(claimed.id))
    return rows


async def _final_page_giving_up(session: AsyncSession, claimed: Mailbox, params: dict, shape: dict,
                                new_history_id: int, events: list[NewEvent]) -> PageCommit:
    """The final page of a mailbox whose catch-up bound is reached: if it is still behind
    its notified id, the notified id is lowered to what Gmail showed (which needs the
    notified id judged under the row lock, read first)."""
    notified = (
        await session.execute(
            select(mailboxes.c.notified_history_id)
            .where(_fence(claimed.id, params["p_owner"], params["p_expected"]))
            .with_for_update()
        )
    ).first()
    if notified is None:
        raise LeaseLost(str(claimed.id))
    notified_id = notified.notified_history_id
    behind = notified_id is not None and notified_id > new_history_id
    end = PageEnd.GIVE_UP_LOWER if behind else PageEnd.GIVE_UP
    await _update_fenced(await driver_connection(session), claimed, _page_update(end, **shape), params, events)
    return PageCommit(CatchUp.GAVE_UP if behind else CatchUp.CAUGHT_UP, notified_id)


async def record_sync_failure(
    sessions: Sessions,
    claimed: Mailbox,
    *,
    owner: str,
    reason: str,
    message: str,
    retry_at: datetime,
    gmail_retry_at: datetime | None,
    now: datetime,
    page_failed: bool = False,
) -> None:
    """Release the claim, keep the mailbox due, and try again at `retry_at`.

    `gmail_retry_at` (Gmail's own retry time, if it named one) also holds back
    renewals: no Gmail call for the mailbox before it. `page_failed`: the
    failure counts against the page the mailbox stands at (poison history)."""
    values: dict = dict(
        lease_owner=None,
        lease_expires_at=None,
        backoff_until=retry_at,
        sync_attempts=mailboxes.c.sync_attempts + 1,
        **failure_values(reason=reason, message=message, at=now, next_attempt_at=retry_at),
        updated=now,
    )
    values.update(gmail_retry_values(gmail_retry_at))
    if page_failed:
        values.update(_page_failed())
    async with autocommit(sessions) as session:
        await session.execute(
            update(mailboxes).where(mailboxes.c.id == claimed.id, mailboxes.c.lease_owner == owner).values(**values)
        )


async def mark_terminal(
    sessions: Sessions,
    claimed: Mailbox,
    *,
    owner: str,
    state: MailboxState,
    reason: str,
    message: str,
    now: datetime,
    event: NewEvent,
) -> bool:
    """AUTH_FAILED / ACCESS_REFUSED stop all Gmail calls for the mailbox until it is
    registered again; the event is written once, with the state change."""
    async with transaction(sessions) as session:
        result = await session.execute(
            update(mailboxes)
            .where(
                mailboxes.c.id == claimed.id,
                mailboxes.c.lease_owner == owner,
                mailboxes.c.state == MailboxState.ACTIVE.value,
            )
            .values(lease_owner=None, lease_expires_at=None,
                    **terminal_values(state=state, reason=reason, message=message, now=now))
        )
        if result.rowcount != 1:
            return False
        await append_events(session, claimed.tenant_id, [event])
    return True
