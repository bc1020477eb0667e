"""Ingest's writes: record Gmail notifications, keep malformed ones for inspection.

`record_notification_batch` is deliberately cross-tenant: a notification names only
an email address, and several tenants may watch the same Gmail mailbox. It
changes scheduling columns only and reports counts per address; it never
returns mailbox data. `write_batch` is the verb ingest calls: the batch's
writes in the mode they need.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Sequence

from psycopg.rows import namedtuple_row
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain import addresses
from mailwatch.store.db import Sessions, driver_autocommit, fetch_all, transaction
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES, MALFORMED_MAX_PER_SOURCE, malformed_notifications


@dataclass(frozen=True)
class NotificationOutcome:
    """What one address's notification did (counts of mailboxes, across tenants)."""

    active: int = 0  # ACTIVE mailboxes that recorded it
    inactive: int = 0  # STOPPED / AUTH_FAILED mailboxes with the address (ignored)
    marked_due: int = 0  # of the active ones, those it made due (history beyond the synced id)


@dataclass(frozen=True)
class MalformedRecord:
    source: str  # subscription path or "push"
    reason: str
    pubsub_message_id: str | None = None
    data: bytes | None = None  # cut to MALFORMED_DATA_MAX_BYTES on insert
    attributes: dict[str, str] = field(default_factory=dict)


# Notifications name Gmail's canonical address (`gmail_address`), which is not
# the registered one when a mailbox was registered under an alias.
# Rows are locked in id order (ORDER BY … FOR UPDATE) so concurrent ingest
# batches touching the same mailboxes cannot deadlock. A mailbox is made due
# only when the notification is news (beyond what was synced); an earlier due
# time is kept.
_RECORD = text(
    """
    WITH incoming AS (
        SELECT email_address, max(CAST(history_id AS bigint)) AS history_id
        FROM json_each_text(CAST(:latest AS json)) AS n(email_address, history_id)
        GROUP BY email_address
    ), clock AS (
        SELECT coalesce(CAST(:now AS timestamptz), now()) AS now
    ), locked AS (
        SELECT m.id, incoming.history_id
        FROM mailboxes AS m JOIN incoming ON m.gmail_address = incoming.email_address
        WHERE m.state = 'ACTIVE'
        ORDER BY m.id
        FOR UPDATE OF m
    ), recorded AS (
        UPDATE mailboxes AS m
        SET notified_history_id = greatest(m.notified_history_id, locked.history_id),
            last_notification_at = clock.now,
            notifications_missed_reported = false,  -- a notification ends a NOTIFICATIONS_MISSED episode
            sync_due_at = CASE
                WHEN m.history_id IS NULL OR locked.history_id > m.history_id
                    THEN least(coalesce(m.sync_due_at, clock.now), clock.now)
                ELSE m.sync_due_at
            END,
            updated = now()
        FROM locked, clock
        WHERE m.id = locked.id
        RETURNING m.gmail_address AS email_address, (m.history_id IS NULL OR locked.history_id > m.history_id) AS news
    ), per_address AS (
        SELECT email_address, count(*) AS active, count(*) FILTER (WHERE news) AS marked_due
        FROM recorded
        GROUP BY email_address
    )
    SELECT incoming.email_address,
           coalesce(per_address.active, 0) AS active,
           coalesce(per_address.marked_due, 0) AS marked_due,
           (SELECT count(*) FROM mailboxes AS x
            WHERE x.gmail_address = incoming.email_address AND x.state <> 'ACTIVE') AS inactive
    FROM incoming LEFT JOIN per_address USING (email_address)
    """
)


async def record_notification_batch(
    session: AsyncSession,
    latest: Mapping[str, int],
    *,
    now: datetime | None = None,
) -> dict[str, NotificationOutcome]:
    """Apply notifications {email address: highest history id} in one statement.

    For every ACTIVE mailbox with that address (any tenant): raise
    notified_history_id, set last_notification_at, and mark it due for sync
    if the history id is beyond what was synced. Stopped/auth-failed mailboxes
    are left alone. Returns an outcome per address that names at least one
    mailbox; unknown addresses are absent. `now` defaults to the database clock.
    """
    collapsed = _collapse(latest)
    if not collapsed:
        return {}
    return _outcomes(await session.execute(_RECORD, _record_params(collapsed, now)))


async def _record_on_driver(connection, latest: Mapping[str, int], now: datetime | None
                            ) -> dict[str, NotificationOutcome]:
    """`record_notification_batch` on the driver's (psycopg) connection in autocommit
    (`db.driver_autocommit`): ingest's every batch, without an ORM session or
    SQLAlchemy's execution and result layers around the one statement."""
    collapsed = _collapse(latest)
    if not collapsed:
        return {}
    return _outcomes(await fetch_all(connection, _compiled_record(), _record_params(collapsed, now),
                                     row_factory=namedtuple_row))


@functools.cache
def _compiled_record() -> str:
    return str(_RECORD.compile(dialect=psycopg.dialect()))


def _collapse(latest: Mapping[str, int]) -> dict[str, int]:
    """The highest history id per normalized address."""
    collapsed: dict[str, int] = {}
    for address, history_id in latest.items():
        key = addresses.normalize(address)
        collapsed[key] = max(int(history_id), collapsed.get(key, 0))
    return collapsed


def _record_params(collapsed: dict[str, int], now: datetime | None) -> dict:
    # One JSON text ({address: history id}) rather than a text[] and a bigint[]: psycopg
    # adapts a list in Python, element by element, which cost ingest's every batch more
    # CPU than the rest of its statement's execute.
    return {"latest": json.dumps(collapsed), "now": now}


def _outcomes(rows) -> dict[str, NotificationOutcome]:
    return {
        row.email_address: NotificationOutcome(
            active=int(row.active), inactive=int(row.inactive), marked_due=int(row.marked_due)
        )
        for row in rows
        if row.active or row.inactive
    }


@dataclass(frozen=True)
class MalformedKept:
    """What `insert_malformed` did with a batch's malformed messages."""

    stored: int = 0
    duplicates: int = 0  # redeliveries of a message already kept: not stored again
    over_cap: int = 0  # older rows of the same source deleted to stay within the cap


async def insert_malformed(
    session: AsyncSession, records: Sequence[MalformedRecord], *, max_per_source: int = MALFORMED_MAX_PER_SOURCE
) -> MalformedKept:
    """Keep undecodable messages for inspection, bounded.

    A redelivered message (same source and Pub/Sub message id) is stored once;
    each source keeps only its newest `max_per_source` rows.
    """
    if not records:
        return MalformedKept()
    rows = [
        {
            "source": record.source,
            "reason": record.reason,
            "pubsub_message_id": record.pubsub_message_id,
            "data": None if record.data is None else bytes(record.data[:MALFORMED_DATA_MAX_BYTES]),
            "attributes": dict(record.attributes),
        }
        for record in records
    ]
    inserted = await session.execute(
        pg_insert(malformed_notifications)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["source", "pubsub_message_id"])
        .returning(malformed_notifications.c.id)
    )
    stored = len(inserted.all())
    over_cap = 0
    for source in sorted({record.source for record in records}):
        over_cap += (await session.execute(_CAP, {"source": source, "keep": max_per_source})).rowcount
    return MalformedKept(stored=stored, duplicates=len(rows) - stored, over_cap=over_cap)


# The newest `keep` rows of a source stay (walked along the (source, received_at) index).
_CAP = text(
    """
    DELETE FROM malformed_notifications
    WHERE id IN (
        SELECT id FROM malformed_notifications
        WHERE source = :source
        ORDER BY received_at DESC, id DESC
        OFFSET :keep
    )
    """
)


async def write_batch(
    sessions: Sessions, latest: Mapping[str, int], malformed: Sequence[MalformedRecord], *, now: datetime
) -> tuple[dict[str, NotificationOutcome], MalformedKept]:
    """Record a batch's notifications (`latest`: highest history id per address) and keep
    its malformed messages, durably: committed when this returns."""
    if not malformed:
        # One statement, run in autocommit: it is its own transaction, so the
        # mailbox rows it locks are released the moment it completes rather than
        # a COMMIT round trip later (batches naming the same mailboxes, and the
        # syncs they start, queue on those locks), and BEGIN/COMMIT cost no
        # round trips.
        async with driver_autocommit(sessions) as connection:
            return await _record_on_driver(connection, latest, now), MalformedKept()
    async with transaction(sessions) as session:
        outcomes = await record_notification_batch(session, latest, now=now)
        return outcomes, await insert_malformed(session, malformed)


async def prune_malformed(session: AsyncSession, older_than: datetime, *, limit: int) -> int:
    """Delete up to `limit` malformed notifications received before `older_than`; rows deleted."""
    result = await session.execute(_PRUNE_MALFORMED, {"older_than": older_than, "limit": limit})
    return result.rowcount


_PRUNE_MALFORMED = text(
    """
    DELETE FROM malformed_notifications
    WHERE id IN (
        SELECT id FROM malformed_notifications
        WHERE received_at < :older_than
        ORDER BY received_at
        LIMIT :limit
    )
    """
)


async def prune_malformed_chunk(sessions: Sessions, older_than: datetime, *, limit: int) -> int:
    """`prune_malformed` as its own transaction: one chunk."""
    async with transaction(sessions) as session:
        return await prune_malformed(session, older_than, limit=limit)
