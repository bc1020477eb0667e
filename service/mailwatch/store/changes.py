"""The change log (`change_events`): append, read, latest position, retention.

Commit order per tenant: `append_events` first takes a transaction-scoped
advisory lock on the tenant, and only then draws sequence numbers. Writers for
one tenant are therefore serialised from their first sequence draw until
commit, so a reader that has seen sequence N can never later find a committed
N' < N for that tenant. Tenants do not wait for each other.

The same transaction queues `NOTIFY mailwatch_changes, '<tenant_id>'`; Postgres
delivers it only if and when the transaction commits. Listeners must treat it
as a wake-up only and re-read from their last sequence (a missed notify costs
latency, never data).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import ChangeEvent, EventType, NewEvent
from mailwatch.store.models import change_events, tenants

CHANGES_CHANNEL = "mailwatch_changes"

# First half of the two-int4 advisory lock key: "this is a change-log writer
# lock". The second half is derived from the tenant id.
CHANGE_LOG_LOCK_CLASS = 0x6D77_0001


def tenant_lock_key(tenant_id: uuid.UUID) -> int:
    """A stable int4 for the tenant (collisions only make two tenants share a lock)."""
    digest = hashlib.blake2b(tenant_id.bytes, digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


_READ_COLUMNS = (
    change_events.c.sequence,
    change_events.c.id,
    change_events.c.tenant_id,
    change_events.c.mailbox_id,
    change_events.c.email_address,
    change_events.c.event_type,
    change_events.c.observed_at,
    change_events.c.history_id,
    change_events.c.message_id,
    change_events.c.thread_id,
    change_events.c.label_ids,
    change_events.c.detail,
)


def _event(row) -> ChangeEvent:
    return ChangeEvent(
        id=row.id,
        sequence=row.sequence,
        tenant_id=row.tenant_id,
        mailbox_id=row.mailbox_id,
        email_address=row.email_address,
        type=EventType(row.event_type),
        observed_at=row.observed_at,
        history_id=row.history_id,
        message_id=row.message_id,
        thread_id=row.thread_id,
        label_ids=tuple(row.label_ids),
        detail=dict(row.detail),
    )


# One round trip: wait for the tenant's writer lock, queue the (commit-time)
# notification, and read the transaction's clock for events without a time.
_LOCK_AND_NOTIFY = text(
    "SELECT now() AS now FROM pg_advisory_xact_lock(:lock_class, :lock_key), pg_notify(:channel, :payload)"
)


async def append_events(
    session: AsyncSession, tenant_id: uuid.UUID, events: Sequence[NewEvent]
) -> list[ChangeEvent]:
    """Append events to the tenant's log, in the given order, within the caller's transaction.

    Returns them with their sequence numbers (ascending in input order). The
    caller commits; until then other writers for this tenant wait. Rows go in
    as one multi-row INSERT per ~1000 events (SQLAlchemy "insertmanyvalues").
    """
    if not events:
        return []
    now = (
        await session.execute(
            _LOCK_AND_NOTIFY,
            {
                "lock_class": CHANGE_LOG_LOCK_CLASS,
                "lock_key": tenant_lock_key(tenant_id),
                "channel": CHANGES_CHANNEL,
                "payload": str(tenant_id),
            },
        )
    ).scalar_one()
    rows = [
        {
            "tenant_id": tenant_id,
            "mailbox_id": event.mailbox_id,
            "email_address": event.email_address,
            "event_type": EventType(event.type).value,
            "history_id": event.history_id,
            "message_id": event.message_id,
            "thread_id": event.thread_id,
            "label_ids": list(event.label_ids),
            "detail": dict(event.detail),
            "observed_at": event.observed_at or now,
        }
        for event in events
    ]
    # sort_by_parameter_order makes Postgres draw identity values in parameter
    # order and returns rows in that order, so sequences follow the input.
    statement = insert(change_events).returning(
        change_events.c.sequence, change_events.c.id, sort_by_parameter_order=True
    )
    returned = (await session.execute(statement, rows)).all()
    return [
        ChangeEvent(
            id=generated.id,
            sequence=generated.sequence,
            tenant_id=tenant_id,
            mailbox_id=row["mailbox_id"],
            email_address=row["email_address"],
            type=EventType(row["event_type"]),
            observed_at=row["observed_at"],
            history_id=row["history_id"],
            message_id=row["message_id"],
            thread_id=row["thread_id"],
            label_ids=tuple(row["label_ids"]),
            detail=row["detail"],
        )
        for generated, row in zip(returned, rows, strict=True)
    ]


async def read_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    after_sequence: int,
    *,
    mailbox_ids: Iterable[uuid.UUID] | None = None,
    types: Iterable[EventType] | None = None,
    limit: int = 1000,
) -> list[ChangeEvent]:
    """Up to `limit` committed events with sequence > after_sequence, in sequence order.

    Empty `mailbox_ids`/`types` (or None) mean no filter. With filters, a page
    may hold fewer than `limit` rows although more match further on; resume
    from the last returned sequence (or use `latest_sequence` to skip ahead).
    """
    statement = select(*_READ_COLUMNS).where(
        (change_events.c.tenant_id == tenant_id) & (change_events.c.sequence > after_sequence)
    )
    mailbox_ids = list(mailbox_ids or ())
    if mailbox_ids:
        statement = statement.where(change_events.c.mailbox_id.in_(mailbox_ids))
    type_values = [EventType(t).value for t in types or ()]
    if type_values:
        statement = statement.where(change_events.c.event_type.in_(type_values))
    statement = statement.order_by(change_events.c.sequence).limit(limit)
    return [_event(row) for row in await session.execute(statement)]


async def latest_sequence(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """The tenant's highest committed sequence (its pruned watermark if the log is empty; 0 if never written)."""
    newest = (
        select(func.max(change_events.c.sequence))
        .where(change_events.c.tenant_id == tenant_id)
        .scalar_subquery()
    )
    statement = select(
        func.greatest(func.coalesce(newest, 0), tenants.c.pruned_through_sequence)
    ).where(tenants.c.id == tenant_id)
    return (await session.execute(statement)).scalar_one_or_none() or 0


# Per tenant, cut at the newest expired event and delete everything at or below
# it, so "cursors at or below pruned_through_sequence have expired" is exact
# (observed_at is not strictly monotonic in sequence across concurrent writers).
_PRUNE = text(
    """
    WITH cut AS (
        SELECT tenant_id, max(sequence) AS through
        FROM change_events
        WHERE observed_at < :older_than
        GROUP BY tenant_id
    ), raised AS (
        UPDATE tenants
        SET pruned_through_sequence = greatest(tenants.pruned_through_sequence, cut.through),
            updated = now()
        FROM cut
        WHERE tenants.id = cut.tenant_id
        RETURNING tenants.id
    ), deleted AS (
        DELETE FROM change_events
        USING cut
        WHERE change_events.tenant_id = cut.tenant_id AND change_events.sequence <= cut.through
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM raised) AS tenants
    """
)


async def prune_events(session: AsyncSession, older_than: datetime) -> int:
    """Delete events observed before `older_than` (and any older-sequenced ones of the
    same tenant), raising each affected tenant's pruned_through_sequence. Returns rows deleted."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    row = (await session.execute(_PRUNE, {"older_than": older_than})).one()
    return int(row.deleted)
