"""Ingest's writes: record Gmail notifications, keep malformed ones for inspection.

`record_notifications` is deliberately cross-tenant: a notification names only
an email address, and several tenants may watch the same Gmail mailbox. It
changes scheduling columns only and returns which mailboxes it touched; it
never returns mailbox data.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable, Mapping

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.store.mailboxes import normalize_address
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES, malformed_notifications

# Locks rows in id order (ORDER BY … FOR UPDATE) so concurrent ingest batches
# touching the same mailboxes cannot deadlock. A mailbox is made due only when
# the notification is news (beyond what was synced); an earlier due time wins.
_RECORD = text(
    """
    WITH incoming AS (
        SELECT email_address, max(history_id) AS history_id
        FROM unnest(CAST(:addresses AS text[]), CAST(:history_ids AS bigint[])) AS n(email_address, history_id)
        GROUP BY email_address
    ), locked AS (
        SELECT m.id, incoming.history_id
        FROM mailboxes AS m JOIN incoming USING (email_address)
        WHERE m.state = 'ACTIVE'
        ORDER BY m.id
        FOR UPDATE OF m
    )
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
    RETURNING m.tenant_id, m.id
    """
)


async def record_notifications(
    session: AsyncSession,
    notifications: Mapping[str, int] | Iterable[tuple[str, int]],
    *,
    now: datetime,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Apply a batch of (email address, history id) notifications in one statement.

    For every ACTIVE mailbox with that address (any tenant): raise
    notified_history_id, set last_notification_at, and mark it due for sync
    if the history id is beyond what was synced. Unknown and stopped
    addresses are ignored. Returns the (tenant_id, mailbox_id) pairs touched.
    """
    pairs = notifications.items() if isinstance(notifications, Mapping) else notifications
    addresses: list[str] = []
    history_ids: list[int] = []
    for address, history_id in pairs:
        addresses.append(normalize_address(address))
        history_ids.append(int(history_id))
    if not addresses:
        return []
    rows = await session.execute(
        _RECORD, {"addresses": addresses, "history_ids": history_ids, "now": now}
    )
    return [(row.tenant_id, row.id) for row in rows]


async def record_malformed_notification(
    session: AsyncSession,
    *,
    source: str,
    reason: str,
    data: bytes | None,
    pubsub_message_id: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """Keep an undecodable message (payload cut to MALFORMED_DATA_MAX_BYTES)."""
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
