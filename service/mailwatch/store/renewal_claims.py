"""The renew worker's claim and outcomes on `mailboxes`.

A renewal claim is one statement, like the sync claim (`store.sync_claims`):
`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`. Its lease
is the due time itself: claiming moves `next_renewal_at` to `now + lease`, so a
replica that dies mid-renewal leaves the mailbox due again once the lease
has passed, and every outcome is fenced on that exact value (plus ACTIVE): a
replica whose claim lapsed, or a mailbox re-registered or stopped meanwhile,
makes the write a no-op. The worker's heartbeat moves the fence to a value
the worker chose before sending it, so when a heartbeat's reply is lost
(committed or not, it cannot tell) the fence is one of two known values and
the outcome is fenced on either (`ClaimedRenewal.fences`). Renewal therefore never holds the sync lease: a
mailbox can be re-watched while it is being synced.

Tenants take turns, as in the sync claim: each tenant's earliest due renewal,
then each one's second, and so on, so a tenant with 50,000 renewals due at
once (a bulk registration a day ago, or a Gmail outage's backlog) does not
make another tenant's few wait behind all of them. Each tenant's candidates
are an index scan of `ix_mailboxes_tenant_renewal_due` (tenant_id,
next_renewal_at WHERE state = 'ACTIVE') of at most `limit` rows, and the
claimed rows are found again by primary key (`claims.claimed_ids`): a tick
costs what is due times the number of tenants with something due, not what
is registered.

Verbs: `claim_renewals` (one statement, autocommit), `extend_claims` (the
worker's heartbeat of the claims it holds, one statement), `watch_group_state`
(reads), and the outcomes `record_renewal`, `record_renewal_failure`,
`mark_terminal` (each one transaction: the fenced update and its events).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import DateTime, Integer, Uuid, and_, bindparam, case, cast, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Compiled
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import Mailbox, MailboxState, NewEvent, SealedCredential
from mailwatch.store import sealed_credentials
from mailwatch.store.changes import append_events
from mailwatch.store.db import Sessions, autocommit, compiled_for_driver, fetch_compiled, reading, transaction, uuid_array
from mailwatch.store.mailboxes import COLUMNS, to_mailbox
from mailwatch.store.models import mailboxes
from mailwatch.store.watch_groups import GroupMember, freshest_expiration, group_members
from mailwatch.store.claims import (
    ACTIVE,
    FAILURE_COLUMNS,
    claimed_ids,
    due_in_tenant_turns,
    failure_values,
    gmail_allows,
    gmail_retry_values,
    terminal_values,
)


@dataclass(frozen=True)
class ClaimedRenewal:
    mailbox: Mailbox
    credential: SealedCredential
    claimed_until: datetime  # the mailbox's next_renewal_at while claimed: the fence
    renew_attempts: int  # consecutive failures before this attempt
    watch_expiry_reported: datetime | None  # the expiration already reported with WATCH_EXPIRED
    watch_expiring_reported: datetime | None = None  # the expiration already announced with WATCH_EXPIRING
    # Where heartbeats whose reply was lost may have moved the fence instead (each chose its
    # value before it was sent): the claim holds while next_renewal_at is any of `fences`.
    unanswered_fences: tuple[datetime, ...] = ()

    @property
    def fences(self) -> tuple[datetime, ...]:
        """The values of next_renewal_at that mean this claim still holds."""
        return (self.claimed_until, *self.unanswered_fences)

    @property
    def expiry_unreported(self) -> bool:
        """Whether this watch's expiration has not been reported yet (true or not, it has lapsed)."""
        expiration = self.mailbox.watch_expiration
        return expiration is not None and self.watch_expiry_reported != expiration

    def expiring_unreported(self, now: datetime, horizon: timedelta) -> bool:
        """Whether the watch expires within `horizon` (not yet lapsed) and nobody said so yet."""
        expiration = self.mailbox.watch_expiration
        return (
            expiration is not None and now < expiration <= now + horizon
            and self.watch_expiring_reported != expiration
        )

    def watch_lapsed(self, now: datetime) -> bool:
        expiration = self.mailbox.watch_expiration
        return expiration is not None and expiration <= now


def due_renewals_query(*, now, limit, skip_tenants):
    """The ids of up to `limit` ACTIVE mailboxes whose renewal is due, locked for the claim:
    tenants take turns (each one's earliest first, then each one's second, …; earliest
    first within a turn); none of `skip_tenants` (a uuid[] expression: those past their
    Gmail quota budget). Each argument is an SQL expression (a bind parameter)."""

    def is_due(rows):
        return rows.c.state == ACTIVE, rows.c.next_renewal_at <= now, gmail_allows(now, rows)

    return due_in_tenant_turns(is_due, "next_renewal_at", limit=limit, skip_tenants=skip_tenants)


@functools.cache
def _claim_statement():
    """The renewal claim, built once: every tick runs it, and building it (and
    SQLAlchemy's cache key for it) cost a few milliseconds of CPU per tick; its values
    are named bind parameters (`_claim_params`)."""
    now = bindparam("p_now", type_=DateTime(timezone=True))
    due = due_renewals_query(now=now, limit=bindparam("p_limit", type_=Integer),
                             skip_tenants=cast(bindparam("p_skip_tenants"), ARRAY(Uuid)))
    return sealed_credentials.with_sealed(
        update(mailboxes)
        .where(mailboxes.c.id == claimed_ids(due))
        .values(next_renewal_at=bindparam("p_claimed_until", type_=DateTime(timezone=True)))
        .returning(*COLUMNS, mailboxes.c.refresh_token_ciphertext)
    )


@functools.cache
def _compiled_claim() -> tuple[str, Compiled]:
    return compiled_for_driver(_claim_statement())


def _claim_params(now: datetime, lease: timedelta, limit: int, skip_tenants: Sequence[uuid.UUID]) -> dict:
    return {"p_now": now, "p_limit": limit, "p_claimed_until": now + lease, "p_skip_tenants": uuid_array(skip_tenants)}


def _claimed(row) -> ClaimedRenewal:
    return ClaimedRenewal(
        mailbox=to_mailbox(row),
        credential=sealed_credentials.stored_of(row),
        claimed_until=row.next_renewal_at,
        renew_attempts=row.renew_attempts,
        watch_expiry_reported=row.watch_expiry_reported,
        watch_expiring_reported=row.watch_expiring_reported,
    )


async def claim_due_renewals(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int, skip_tenants: Sequence[uuid.UUID] = ()
) -> list[ClaimedRenewal]:
    """Claim up to `limit` due renewals (`due_renewals_query`) on the caller's session: each
    is due again at `now + lease` unless an outcome is written."""
    rows = await session.execute(_claim_statement(), _claim_params(now, lease, limit, skip_tenants))
    return [_claimed(row) for row in rows]


def _fence(claim: ClaimedRenewal):
    return and_(
        mailboxes.c.id == claim.mailbox.id,
        mailboxes.c.state == ACTIVE,
        mailboxes.c.next_renewal_at.in_(claim.fences),
    )


_EXTEND = text("""
    UPDATE mailboxes SET next_renewal_at = :until
    FROM unnest(CAST(:ids AS uuid[]), CAST(:fences AS timestamptz[])) AS held (id, fence)
    WHERE mailboxes.id = held.id AND mailboxes.next_renewal_at = held.fence AND mailboxes.state = 'ACTIVE'
    RETURNING mailboxes.id
""")


async def extend_claims(sessions: Sessions, fences: dict[uuid.UUID, Sequence[datetime]], *,
                        until: datetime) -> set[uuid.UUID]:
    """Heartbeat of claims still being worked on (mailbox id -> the values its fence may have,
    `ClaimedRenewal.fences`): each one's lease (its `next_renewal_at`, the fence) moved on to
    `until`, ONE statement in autocommit; the ids still held, whose fence is now `until` (the
    others were re-registered, stopped or, their lease lapsed, claimed again elsewhere).
    If it raises, the statement may have committed all the same: the fences are then their
    values before or `until`."""
    if not fences:
        return set()
    held = [(mailbox_id, fence) for mailbox_id, values in fences.items() for fence in values]
    async with autocommit(sessions) as session:
        rows = await session.execute(_EXTEND, {"ids": [mailbox_id for mailbox_id, _ in held],
                                               "fences": [fence for _, fence in held], "until": until})
        return {row.id for row in rows}


async def claim_renewals(sessions: Sessions, *, now: datetime, lease: timedelta, limit: int,
                         skip_tenants: Sequence[uuid.UUID] = ()) -> list[ClaimedRenewal]:
    """`claim_due_renewals`, ONE statement, in autocommit: no BEGIN and COMMIT round
    trips around it, and its row locks end as Postgres finishes it. Compiled once and
    run on the driver's connection, as the sync claim is (`sync_claims.claim_syncs`)."""
    rows = await fetch_compiled(sessions, _compiled_claim(), _claim_params(now, lease, limit, skip_tenants))
    return [_claimed(row) for row in rows]


async def watch_group_state(
    sessions: Sessions, mailbox: Mailbox, project: str, *, deployment_topic: str
) -> tuple[list[GroupMember], datetime | None]:
    """The other ACTIVE registrations sharing the mailbox's watch, and the freshest
    expiration among them (`watch_groups`)."""
    async with reading(sessions) as session:
        sharing = await group_members(
            session, mailbox.email_address, project, deployment_topic=deployment_topic, exclude=mailbox.id)
        fresh = await freshest_expiration(
            session, mailbox.email_address, project, deployment_topic=deployment_topic, exclude=mailbox.id)
    return sharing, fresh


async def _fenced_update(sessions: Sessions, claim: ClaimedRenewal, values: dict, events: Sequence[NewEvent]) -> bool:
    """Apply `values` if the claim still holds, then append `events`: one transaction.

    Events without a history id get the mailbox's synced history id as of this
    write (read under the row lock), like other lifecycle events: a stream
    never sees a lifecycle event positioned before changes already delivered.
    """
    async with transaction(sessions) as session:
        row = (
            await session.execute(
                update(mailboxes).where(_fence(claim)).values(**values).returning(mailboxes.c.history_id)
            )
        ).one_or_none()
        if row is None:
            return False
        if events:
            stamped = [e if e.history_id is not None else dataclasses.replace(e, history_id=row.history_id)
                       for e in events]
            await append_events(session, claim.mailbox.tenant_id, stamped)
    return True


async def record_renewal(
    sessions: Sessions,
    claim: ClaimedRenewal,
    *,
    expiration: datetime,
    next_renewal_at: datetime,
    now: datetime,
    events: Sequence[NewEvent],
) -> bool:
    """The watch was renewed: store its expiration and the next renewal. False if the claim was lost.

    An error recorded by failed renewals is cleared; one recorded by sync
    since (no failed renewals outstanding) is left alone.
    """
    renewal_failed_before = mailboxes.c.renew_attempts > 0
    values = dict(
        watch_expiration=expiration,
        next_renewal_at=next_renewal_at,
        renew_attempts=0,
        gmail_retry_at=None,  # Gmail answered: any lockout is over
        **{column: case((renewal_failed_before, None), else_=mailboxes.c[column]) for column in FAILURE_COLUMNS},
        updated=now,
    )
    return await _fenced_update(sessions, claim, values, events)


async def record_renewal_failure(
    sessions: Sessions,
    claim: ClaimedRenewal,
    *,
    reason: str,
    message: str,
    retry_at: datetime,
    gmail_retry_at: datetime | None = None,
    now: datetime,
    events: Sequence[NewEvent] = (),
    expiry_reported: bool = False,
    expiring_reported: bool = False,
) -> bool:
    """Try again at `retry_at`; with `expiry_reported` / `expiring_reported`, the watch's
    lapse / coming lapse is now reported (events carry it).

    `gmail_retry_at` (Gmail's own retry time, if it named one) also holds back
    syncs: no Gmail call for the mailbox before it."""
    values: dict = dict(
        next_renewal_at=retry_at,
        renew_attempts=mailboxes.c.renew_attempts + 1,
        **failure_values(reason=reason, message=message, at=now, next_attempt_at=retry_at),
        updated=now,
    )
    values.update(gmail_retry_values(gmail_retry_at))
    if expiry_reported:
        values["watch_expiry_reported"] = claim.mailbox.watch_expiration
    if expiring_reported:
        values["watch_expiring_reported"] = claim.mailbox.watch_expiration
    return await _fenced_update(sessions, claim, values, events)


async def mark_terminal(
    sessions: Sessions,
    claim: ClaimedRenewal,
    *,
    state: MailboxState,
    reason: str,
    message: str,
    now: datetime,
    events: Sequence[NewEvent],
    expiry_reported: bool = False,
) -> bool:
    """Revoked credentials or refused access found by a renewal: the terminal state exactly
    as sync marks it (no Gmail calls until registered again), with its event(s) in the same write."""
    values = terminal_values(state=state, reason=reason, message=message, now=now)
    if expiry_reported:
        values["watch_expiry_reported"] = claim.mailbox.watch_expiration
    return await _fenced_update(sessions, claim, values, events)
