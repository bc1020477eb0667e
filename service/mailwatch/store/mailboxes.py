"""Queries on `mailboxes`. Every function takes the tenant id: there is no way
to read or change a mailbox without naming its tenant, and another tenant's
mailbox is simply NotFound.

Addresses are stored lower-cased (`domain.addresses.normalize`); lookups normalise too.
Reads never load a mailbox's sealed refresh token; only
`sealed_credentials.load_stored` (and the workers' claims) do.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, Uuid, bindparam, case, func, literal, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain import addresses
from mailwatch.domain.errors import NotFound
from mailwatch.domain.models import (
    CredentialKind,
    LabelFilter,
    LabelFilterBehavior,
    Mailbox,
    MailboxState,
)
from mailwatch.store._errors import tenant_must_exist
from mailwatch.store.db import Sessions, reading
from mailwatch.store.models import mailboxes

_SECRET_COLUMNS = {"refresh_token_ciphertext"}
COLUMNS = tuple(column for column in mailboxes.c if column.name not in _SECRET_COLUMNS)


def to_mailbox(row) -> Mailbox:
    """A domain Mailbox from a row selected with `COLUMNS` (also used by workers' queries)."""
    return Mailbox(
        id=row.id,
        tenant_id=row.tenant_id,
        email_address=row.email_address,
        state=MailboxState(row.state),
        label_filter=LabelFilter(
            label_ids=tuple(row.label_ids), behavior=LabelFilterBehavior(row.label_filter_behavior)
        ),
        credential_kind=CredentialKind(row.credential_kind),
        history_id=row.history_id,
        notified_history_id=row.notified_history_id,
        watch_expiration=row.watch_expiration,
        next_renewal_at=row.next_renewal_at,
        last_notification_at=row.last_notification_at,
        last_sync_at=row.last_sync_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        created=row.created,
        updated=row.updated,
        last_error_reason=row.last_error_reason,
        next_attempt_at=row.next_attempt_at,
        sync_due_at=row.sync_due_at,
        backoff_until=row.backoff_until,
        sync_attempts=row.sync_attempts,
        page_failures=row.page_failures,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        metadata_headers=None if row.metadata_headers is None else tuple(row.metadata_headers),
        include_drafts=row.include_drafts,
        notifications_missed_reported=row.notifications_missed_reported,
        watch_topic=row.watch_topic,
        gmail_address=row.gmail_address,
    )


def _not_found(mailbox_id: uuid.UUID) -> NotFound:
    return NotFound("mailbox not found", metadata={"mailbox_id": str(mailbox_id)})


def _owned(tenant_id: uuid.UUID, mailbox_id: uuid.UUID):
    return (mailboxes.c.tenant_id == tenant_id) & (mailboxes.c.id == mailbox_id)


async def get_mailbox(session: AsyncSession, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> Mailbox:
    row = (await session.execute(select(*COLUMNS).where(_owned(tenant_id, mailbox_id)))).one_or_none()
    if row is None:
        raise _not_found(mailbox_id)
    return to_mailbox(row)


async def find_mailboxes_by_addresses(
    session: AsyncSession, tenant_id: uuid.UUID, email_addresses: Sequence[str]
) -> dict[str, Mailbox]:
    """The tenant's mailboxes for these addresses (one query), by normalised address."""
    wanted = sorted({addresses.normalize(address) for address in email_addresses})
    rows = await session.execute(
        select(*COLUMNS).where((mailboxes.c.tenant_id == tenant_id) & mailboxes.c.email_address.in_(wanted))
    )
    return {row.email_address: to_mailbox(row) for row in rows}


@functools.cache
def _upsert_statement(names: tuple[str, ...]):
    """The registration upsert, built once: building it (ON CONFLICT's `excluded`
    proxies every column of the table) is a large share of a registration's CPU."""
    statement = insert(mailboxes).values({name: bindparam(name, type_=mailboxes.c[name].type) for name in names})
    new = statement.excluded
    was_stopped = mailboxes.c.state == MailboxState.STOPPED.value
    # A terminal state (credentials or access refused) is left by registering again.
    # Two comparisons, not IN: an IN list is an "expanding" parameter, which executemany refuses.
    was_terminal = ((mailboxes.c.state == MailboxState.AUTH_FAILED.value)
                    | (mailboxes.c.state == MailboxState.ACCESS_REFUSED.value))
    statement = statement.on_conflict_do_update(
        constraint="uq_mailboxes_tenant_id_email_address",
        set_=dict(
            state=MailboxState.ACTIVE.value,
            gmail_address=new.gmail_address,
            label_ids=new.label_ids,
            label_filter_behavior=new.label_filter_behavior,
            credential_kind=new.credential_kind,
            sealed_credential_id=new.sealed_credential_id,
            refresh_token_ciphertext=new.refresh_token_ciphertext,
            subject=new.subject,
            metadata_headers=new.metadata_headers,
            include_drafts=new.include_drafts,
            history_id=case(
                (was_stopped, func.coalesce(new.history_id, mailboxes.c.history_id)),
                else_=func.coalesce(mailboxes.c.history_id, new.history_id),
            ),
            notified_history_id=case((was_stopped, None), else_=mailboxes.c.notified_history_id),
            watch_expiration=func.coalesce(new.watch_expiration, mailboxes.c.watch_expiration),
            next_renewal_at=func.coalesce(new.next_renewal_at, mailboxes.c.next_renewal_at),
            watch_topic=func.coalesce(new.watch_topic, mailboxes.c.watch_topic),
            sync_due_at=case(
                (was_stopped, None),
                (was_terminal, func.coalesce(mailboxes.c.sync_due_at, func.now())),
                else_=mailboxes.c.sync_due_at,
            ),
            backoff_until=None,
            sync_attempts=0,
            renew_attempts=0,  # a fresh watch: earlier renewal failures are moot
            last_error=None,
            last_error_reason=None,
            last_error_at=None,
            next_attempt_at=None,
            gmail_retry_at=None,  # the watch just made went through
            updated=func.now(),
        ),
    ).returning(*COLUMNS, literal_column("(xmax = 0)").label("inserted"))
    return statement


@dataclass(frozen=True)
class MailboxUpsert:
    """One registration's row for `upsert_mailboxes` (see `upsert_mailbox` for the fields)."""

    email_address: str
    label_filter: LabelFilter
    credential_kind: CredentialKind
    sealed_credential_id: uuid.UUID  # the tenant's sealed row (store/sealed_credentials.py)
    refresh_token_ciphertext: bytes | None = field(default=None, repr=False)  # OAuth: the mailbox's own
    subject: str | None = None  # a service account's impersonated address when not the mailbox's
    history_id: int | None = None
    watch_expiration: datetime | None = None
    next_renewal_at: datetime | None = None
    metadata_headers: Sequence[str] | None = None
    watch_topic: str | None = None
    gmail_address: str | None = None
    include_drafts: bool = False


async def upsert_mailbox(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    email_address: str,
    label_filter: LabelFilter,
    credential_kind: CredentialKind,
    sealed_credential_id: uuid.UUID,
    refresh_token_ciphertext: bytes | None = None,
    subject: str | None = None,
    history_id: int | None = None,
    watch_expiration: datetime | None = None,
    next_renewal_at: datetime | None = None,
    metadata_headers: Sequence[str] | None = None,
    watch_topic: str | None = None,
    gmail_address: str | None = None,
    include_drafts: bool = False,
) -> tuple[Mailbox, bool]:
    """Register: insert the tenant's mailbox for this address, or update the existing one.

    Returns (mailbox, created). Updating always makes the mailbox ACTIVE again,
    replaces filter and credentials, and clears the error and retry state.
    `history_id`, `watch_expiration` and `next_renewal_at` are the result of the
    `users.watch` the caller just made; None keeps the stored value (no re-watch).
    `metadata_headers` (None = metadata off) and `include_drafts` always replace the stored choice.

    The sync position survives re-registration so nothing is lost: an ACTIVE
    mailbox keeps syncing from where it was, an AUTH_FAILED or ACCESS_REFUSED
    one catches up from its stored history id (it is marked due now). A STOPPED mailbox starts again from the new watch's
    history id: what happened while it was stopped is not replayed.
    `gmail_address` (default: the registered address) is the address Gmail's
    notifications name.
    """
    row = MailboxUpsert(
        email_address=email_address, label_filter=label_filter, credential_kind=credential_kind,
        sealed_credential_id=sealed_credential_id, refresh_token_ciphertext=refresh_token_ciphertext,
        subject=subject, history_id=history_id, watch_expiration=watch_expiration,
        next_renewal_at=next_renewal_at, metadata_headers=metadata_headers, watch_topic=watch_topic,
        gmail_address=gmail_address, include_drafts=include_drafts,
    )
    return (await upsert_mailboxes(session, tenant_id, [row]))[0]


async def upsert_mailboxes(
    session: AsyncSession, tenant_id: uuid.UUID, rows: Sequence[MailboxUpsert]
) -> list[tuple[Mailbox, bool]]:
    """`upsert_mailbox` for many addresses (distinct) in one statement; results in input order.

    A batch registration writes all its rows at once: a statement per row
    would be most of the CPU of a batched registration. Rows
    are sent in address order, so two batches that overlap lock their common
    rows in the same order and cannot deadlock. Any failure fails them all and
    aborts the caller's transaction (no savepoint: two more round trips per
    registration, for a transaction that is rolled back anyway).
    """
    if not rows:
        return []
    values = [_upsert_values(tenant_id, row) for row in rows]
    if len({value["email_address"] for value in values}) != len(values):
        raise ValueError("upsert_mailboxes: an address appears twice")  # ON CONFLICT could not update it twice
    statement = _upsert_statement(tuple(values[0]))
    with tenant_must_exist(tenant_id, "fk_mailboxes_tenant_id_tenants"):
        returned = (await session.execute(statement, sorted(values, key=lambda v: v["email_address"]))).all()
    by_address = {row.email_address: (to_mailbox(row), bool(row.inserted)) for row in returned}
    return [by_address[value["email_address"]] for value in values]


def _upsert_values(tenant_id: uuid.UUID, row: MailboxUpsert) -> dict:
    return dict(
        tenant_id=tenant_id,
        email_address=addresses.normalize(row.email_address),
        gmail_address=addresses.normalize(row.gmail_address or row.email_address),
        state=MailboxState.ACTIVE.value,
        label_ids=list(row.label_filter.label_ids),
        label_filter_behavior=row.label_filter.behavior.value,
        credential_kind=row.credential_kind.value,
        sealed_credential_id=row.sealed_credential_id,
        refresh_token_ciphertext=row.refresh_token_ciphertext,
        # Stored only when it is not the mailbox's own address (most service-account mailboxes).
        subject=(None if row.subject is None or addresses.normalize(row.subject) == addresses.normalize(row.email_address)
                 else row.subject),
        history_id=row.history_id,
        watch_expiration=row.watch_expiration,
        next_renewal_at=row.next_renewal_at,
        metadata_headers=None if row.metadata_headers is None else list(row.metadata_headers),
        include_drafts=row.include_drafts,
        watch_topic=row.watch_topic,
    )


async def set_options(
    session: AsyncSession, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID], *,
    metadata_headers: tuple[str, ...] | None, include_drafts: bool,
) -> dict[uuid.UUID, Mailbox]:
    """Set what the tenant's ACTIVE mailboxes `mailbox_ids` deliver beyond their filter
    (metadata headers, draft versions) in place: their watch, cursor and credential stay.
    Mailboxes no longer ACTIVE are left out of the answer (the caller watches them again)."""
    if not mailbox_ids:
        return {}
    rows = (
        await session.execute(
            update(mailboxes)
            .where((mailboxes.c.tenant_id == tenant_id) & mailboxes.c.id.in_(list(mailbox_ids))
                   & (mailboxes.c.state == MailboxState.ACTIVE.value))
            .values(metadata_headers=None if metadata_headers is None else list(metadata_headers),
                    include_drafts=include_drafts)
            .returning(*COLUMNS)
        )
    ).all()
    return {row.id: to_mailbox(row) for row in rows}


async def mark_stopped(
    session: AsyncSession, tenant_id: uuid.UUID, mailbox_id: uuid.UUID
) -> tuple[Mailbox, bool]:
    """Mark the mailbox STOPPED and cancel pending sync work. Returns (mailbox, changed):
    `changed` is False when it was already stopped, so the caller emits MAILBOX_STOPPED once."""
    row = (
        await session.execute(
            update(mailboxes)
            .where(_owned(tenant_id, mailbox_id) & (mailboxes.c.state != MailboxState.STOPPED.value))
            # A stopped mailbox keeps no secret: its credential goes (the tenant's
            # sealed row too once nothing refers to it, `sealed_credentials.sweep`).
            .values(state=MailboxState.STOPPED.value, sync_due_at=None, backoff_until=None,
                    sealed_credential_id=None, refresh_token_ciphertext=None, subject=None)
            .returning(*COLUMNS)
        )
    ).one_or_none()
    if row is not None:
        return to_mailbox(row), True
    return await get_mailbox(session, tenant_id, mailbox_id), False


async def list_mailboxes(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    states: Sequence[MailboxState] = (),
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 100,
) -> list[Mailbox]:
    """One page in (created, id) order, optionally only mailboxes in `states`.
    `after` is the (created, id) of the last mailbox of the previous page
    (keyset paging: stable under inserts)."""
    statement = select(*COLUMNS).where(mailboxes.c.tenant_id == tenant_id)
    if states:
        statement = statement.where(mailboxes.c.state.in_([MailboxState(s).value for s in states]))
    if after is not None:
        after_created, after_id = after
        statement = statement.where(
            tuple_(mailboxes.c.created, mailboxes.c.id)
            > tuple_(literal(after_created, DateTime(timezone=True)), literal(after_id, Uuid))
        )
    statement = statement.order_by(mailboxes.c.created, mailboxes.c.id).limit(limit)
    return [to_mailbox(row) for row in await session.execute(statement)]


async def fetch_mailbox(sessions: Sessions, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> Mailbox:
    """`get_mailbox` in a session of its own."""
    async with reading(sessions) as session:
        return await get_mailbox(session, tenant_id, mailbox_id)


async def mailbox_page(
    sessions: Sessions, tenant_id: uuid.UUID, *, states: Sequence[MailboxState] = (),
    after: tuple[datetime, uuid.UUID] | None = None, limit: int = 100,
) -> list[Mailbox]:
    """`list_mailboxes` in a session of its own."""
    async with reading(sessions) as session:
        return await list_mailboxes(session, tenant_id, states=states, after=after, limit=limit)
