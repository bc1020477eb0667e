"""Ingest's writes: record Gmail notifications, keep malformed ones for inspection.

`record_notification_batch` is deliberately cross-tenant: a notification
names only an email address, and several tenants may watch the same Gmail
mailbox (index `ix_mailboxes_email_address`). It changes scheduling columns
only and reports, per address, which mailboxes it touched and whether the
address is unknown or only registered as STOPPED / AUTH_FAILED; it never
returns mailbox data.

Functions take a session and do not commit; the caller commits once per
pulled batch, so a batch is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import MailboxState
from mailwatch.store.mailboxes import normalize_address
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES, malformed_notifications


@dataclass(frozen=True)
class AddressOutcome:
    """What one notified address matched."""

    mailboxes: tuple[tuple[uuid.UUID, uuid.UUID], ...] = ()  # (tenant_id, mailbox_id) recorded
    marked_due: int = 0  # of those, how many the notification made (or kept) due for a sync
    inactive: int = 0  # STOPPED / AUTH_FAILED mailboxes with this address (ignored)

    @property
    def active(self) -> int:
        return len(self.mailboxes)

    @property
    def unknown(self) -> bool:
        return not self.mailboxes and not self.inactive


@dataclass(frozen=True)
class MalformedRecord:
    source: str  # the subscription path, or "push"
    reason: str
    pubsub_message_id: str | None = None
    data: bytes | None = None
    attributes: dict[str, str] = field(default_factory=dict)


# One statement for the whole batch:
# - `incoming` holds one row per address, at its highest history id;
# - `locked` takes the row locks in id order (ORDER BY … FOR UPDATE), so
#   concurrent batches touching the same mailboxes cannot deadlock;
# - GREATEST never lowers notified_history_id (duplicates, reordering); a
#   mailbox is made due only when the notification is news (beyond what was
#   synced), and an earlier due time wins, so a burst is one pending sync;
# - the final SELECT reads the statement's snapshot (before the update),
#   which is all it needs to tell stopped/auth-failed addresses from unknown.
_RECORD = text(
    f"""
    WITH incoming AS (
        SELECT email_address, max(history_id) AS history_id
        FROM unnest(CAST(:addresses AS text[]), CAST(:history_ids AS bigint[]))
             AS n(email_address, history_id)
        GROUP BY email_address
    ), locked AS (
        SELECT m.id, incoming.history_id
        FROM mailboxes AS m JOIN incoming USING (email_address)
        WHERE m.state = '{MailboxState.ACTIVE.value}'
        ORDER BY m.id
        FOR UPDATE OF m
    ), updated AS (
        UPDATE mailboxes AS m
        SET notified_history_id = greatest(m.notified_history_id, locked.history_id),
            last_notification_at = :now,
            sync_due_at = CASE
                WHEN m.history_id IS NULL OR locked.history_id > m.history_id
                    THEN least(coalesce(m.sync_due_at, :now), :now)
                ELSE m.sync_due_at
            END,
            updated = now()
        FROM locked
        WHERE m.id = locked.id
        RETURNING m.tenant_id, m.id, m.email_address,
                  (m.history_id IS NULL OR locked.history_id > m.history_id) AS due
    )
    SELECT incoming.email_address,
           array_remove(array_agg(updated.tenant_id ORDER BY updated.id), NULL) AS tenant_ids,
           array_remove(array_agg(updated.id ORDER BY updated.id), NULL) AS mailbox_ids,
           count(*) FILTER (WHERE updated.due) AS marked_due,
           (SELECT count(*) FROM mailboxes AS x
             WHERE x.email_address = incoming.email_address
               AND x.state <> '{MailboxState.ACTIVE.value}') AS inactive
    FROM incoming LEFT JOIN updated USING (email_address)
    GROUP BY incoming.email_address
    """
)


async def record_notification_batch(
    session: AsyncSession,
    notifications: Mapping[str, int] | Iterable[tuple[str, int]],
    *,
    now: datetime,
) -> dict[str, AddressOutcome]:
    """Apply a batch of (email address, history id) notifications in one statement.

    For every ACTIVE mailbox with that address (any tenant):
    `notified_history_id = GREATEST(notified_history_id, id)`,
    `last_notification_at = now`, and, only when `id` is newer than the synced
    `history_id`, `sync_due_at = LEAST(COALESCE(sync_due_at, now), now)`.
    Idempotent: replaying a batch changes nothing but timestamps. Returns an
    outcome for every (normalized) address in the batch.
    """
    pairs = notifications.items() if isinstance(notifications, Mapping) else notifications
    addresses: list[str] = []
    history_ids: list[int] = []
    for address, history_id in pairs:
        addresses.append(normalize_address(address))
        history_ids.append(int(history_id))
    if not addresses:
        return {}
    rows = await session.execute(
        _RECORD, {"addresses": addresses, "history_ids": history_ids, "now": now}
    )
    return {
        row.email_address: AddressOutcome(
            mailboxes=tuple(zip(row.tenant_ids, row.mailbox_ids)),
            marked_due=row.marked_due,
            inactive=row.inactive,
        )
        for row in rows
    }


async def record_notifications(
    session: AsyncSession,
    notifications: Mapping[str, int] | Iterable[tuple[str, int]],
    *,
    now: datetime,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Like `record_notification_batch`; returns only the (tenant_id, mailbox_id) pairs touched."""
    outcomes = await record_notification_batch(session, notifications, now=now)
    return [pair for outcome in outcomes.values() for pair in outcome.mailboxes]


async def insert_malformed(session: AsyncSession, records: Sequence[MalformedRecord]) -> None:
    """Keep undecodable messages for inspection, in one executemany (data cut to the limit)."""
    if not records:
        return
    await session.execute(
        insert(malformed_notifications),
        [
            {
                "source": record.source,
                "reason": record.reason,
                "pubsub_message_id": record.pubsub_message_id,
                "data": None if record.data is None else bytes(record.data[:MALFORMED_DATA_MAX_BYTES]),
                "attributes": dict(record.attributes),
            }
            for record in records
        ],
    )


async def record_malformed_notification(
    session: AsyncSession,
    *,
    source: str,
    reason: str,
    data: bytes | None,
    pubsub_message_id: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """Keep one undecodable message (payload cut to MALFORMED_DATA_MAX_BYTES); returns its id."""
    statement = (
        insert(malformed_notifications)
        .values(
            source=source,
            reason=reason,
            data=None if data is None else bytes(data[:MALFORMED_DATA_MAX_BYTES]),
            pubsub_message_id=pubsub_message_id,
            attributes=dict(attributes or {}),
        )
        .returning(malformed_notifications.c.id)
    )
    return (await session.execute(statement)).scalar_one()
