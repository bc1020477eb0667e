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

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import Integer, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.errors import NotFound
from mailwatch.domain.models import ChangeEvent, EventType, MessageMetadata, NewEvent
from mailwatch.domain.stream_partitions import StreamPartition
from mailwatch.store.db import Sessions, driver_autocommit, fetch_all, reading, transaction
from mailwatch.store.mailboxes import get_mailbox
from mailwatch.store.models import change_events, tenants
from mailwatch.store.tenants import get_tenant

CHANGES_CHANNEL = "mailwatch_changes"

# First half of the two-int4 advisory lock key: "this is a change-log writer
# lock". The second half is derived from the tenant id.
CHANGE_LOG_LOCK_CLASS = 0x6D77_0001


def tenant_lock_key(tenant_id: uuid.UUID) -> int:
    """A stable int4 for the tenant (collisions only make two tenants share a lock)."""
    digest = hashlib.blake2b(tenant_id.bytes, digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


# What `_event` takes, in its order. Most events have no detail: NULL skips
# decoding '{}' per row, a large part of the client-side cost of reading a batch.
_READ_COLUMNS = (
    "sequence, id, tenant_id, mailbox_id, email_address, event_type, observed_at, history_id, message_id, "
    "thread_id, label_ids, nullif(detail, '{}'::jsonb) AS detail, metadata"
)
_READ_COLUMN_COUNT = 13

_EVENT_TYPES = {member.value: member for member in EventType}


def _event(values) -> ChangeEvent:
    """A ChangeEvent from one row's `_READ_COLUMNS` values, in that order.

    Positional on purpose: it runs for every event streamed, and unpacking a
    row is several times cheaper than reading twelve columns by name."""
    (sequence, event_id, tenant_id, mailbox_id, email_address, event_type, observed_at,
     history_id, message_id, thread_id, label_ids, detail, metadata) = values
    return ChangeEvent(
        event_id, sequence, tenant_id, mailbox_id, email_address, _EVENT_TYPES[event_type], observed_at,
        history_id, message_id, thread_id, tuple(label_ids), dict(detail) if detail else {},
        None if metadata is None else MessageMetadata.from_json(metadata),
    )


# ONE statement takes the tenant's writer lock, queues the (commit-time)
# notification and inserts the batch. The lock is taken before any sequence
# number is drawn: identity values are drawn as ModifyTable receives rows, and
# no row reaches it before the sort has read its whole input, which is joined
# to the locking CTE (MATERIALIZED: evaluated once, never inlined). The lock
# serialises every commit of a tenant, so it is held for one statement only,
# never across a round trip to the client: a page commit of a busy tenant
# waits for the commits ahead of it (the `commit` stage of mailwatch.stages).
#
# The whole batch travels as ONE json parameter: a multi-row VALUES list with
# thousands of placeholders costs more to build and parse client-side than
# Postgres needs to insert the rows (docs/performance.md).
# The lock and the NOTIFY, as one CTE read before any row reaches the INSERT.
# `FROM page` (the updated rows of `update_and_append`) makes the lock wait for
# the UPDATE's row lock first, the order every other writer takes them in.
_WRITER_LOCK = """
    writer_lock AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(CAST(%(mw_lock_class)s AS int4), CAST(%(mw_lock_key)s AS int4)),
               pg_notify(%(mw_channel)s, %(mw_payload)s)
        {source}
    )"""
_INSERT_EVENTS = """
    INSERT INTO change_events (
        tenant_id, mailbox_id, email_address, event_type, history_id,
        message_id, thread_id, label_ids, detail, metadata, observed_at
    )
    SELECT CAST(%(mw_tenant_id)s AS uuid), r.mailbox_id, r.email_address, r.event_type, r.history_id,
           r.message_id, r.thread_id, coalesce(r.label_ids, '{}'), coalesce(r.detail, '{}'), r.metadata,
           coalesce(r.observed_at, now())
    FROM jsonb_to_recordset(CAST(%(mw_rows)s AS jsonb)) AS r(
        n integer, mailbox_id uuid, email_address text, event_type text, history_id bigint,
        message_id text, thread_id text, label_ids text[], detail jsonb, metadata jsonb, observed_at timestamptz
    ) CROSS JOIN writer_lock
    ORDER BY r.n
    RETURNING """ + _READ_COLUMNS
_APPEND = "WITH" + _WRITER_LOCK.format(source="") + _INSERT_EVENTS


def _append_params(tenant_id: uuid.UUID, events: Sequence[NewEvent]) -> dict:
    rows = [
        {
            "n": position,
            "mailbox_id": None if event.mailbox_id is None else str(event.mailbox_id),
            "email_address": event.email_address,
            "event_type": EventType(event.type).value,
            "history_id": event.history_id,
            "message_id": event.message_id,
            "thread_id": event.thread_id,
            "label_ids": list(event.label_ids),
            "detail": dict(event.detail),
            "metadata": None if event.metadata is None else event.metadata.to_json(),
            "observed_at": None if event.observed_at is None else event.observed_at.isoformat(),
        }
        for position, event in enumerate(events)
    ]
    return {
        "mw_lock_class": CHANGE_LOG_LOCK_CLASS,
        "mw_lock_key": tenant_lock_key(tenant_id),
        "mw_channel": CHANGES_CHANNEL,
        "mw_payload": str(tenant_id),
        "mw_tenant_id": tenant_id,
        "mw_rows": json.dumps(rows),
    }


async def append_events(
    session: AsyncSession, tenant_id: uuid.UUID, events: Sequence[NewEvent]
) -> list[ChangeEvent]:
    """Append events to the tenant's log, in the given order, within the caller's transaction.

    Returns them with their sequence numbers (ascending in input order). The
    caller commits; until then other writers for this tenant wait. One
    statement: lock, notify and insert (see `_APPEND`). Events without an
    observed time get the transaction's.
    """
    if not events:
        return []
    # Read back as binary tuples, like a stream read (`_fetch_tuples`): no SQLAlchemy
    # statement or result layer on the path every sync's commit takes.
    returned = await _fetch_tuples(session, _APPEND, _append_params(tenant_id, events))
    # Identity values were drawn in `n` order (INSERT … SELECT … ORDER BY), so
    # ascending sequence is input order.
    returned.sort(key=lambda row: row[0])
    return [_event(row) for row in returned]


def writer_lock(tenant_id: uuid.UUID):
    """The expression that takes the tenant's writer lock (the one `append_events` takes),
    held to the end of the transaction: the tenant's commits wait for it. For a writer
    that must decide what to append from what the log holds, with no commit landing in
    between (a backfill's batch); taken after the writer's row locks, like every other
    writer's."""
    return func.pg_advisory_xact_lock(cast(CHANGE_LOG_LOCK_CLASS, Integer), cast(tenant_lock_key(tenant_id), Integer))


async def update_and_append(
    connection, update_sql: str, params: dict, tenant_id: uuid.UUID, events: Sequence[NewEvent]
) -> list[tuple]:
    """Run a fenced `UPDATE … RETURNING` (its SQL in the driver's `%(name)s` style, and
    its parameters) on the driver's `connection` (`db.driver_autocommit`, or a
    transaction's: `driver_connection`) and, if it updated a row, append `events` (as `append_events`), in
    ONE statement; the UPDATE's RETURNING rows, as tuples.

    A sync's page commit is this statement alone, so it runs in autocommit: its
    own transaction, whose locks (the mailbox row, the tenant's writer lock) end
    when Postgres finishes it. In a transaction the row lock would be held from the
    UPDATE through the lock wait, the INSERT and the COMMIT round trips, with ingest
    batches naming the mailbox queued behind it. No row updated (the fence failed):
    nothing appended.
    """
    if events:
        sql = update_then_append_sql(update_sql)
        params = {**params, **_append_params(tenant_id, events)}
    else:
        sql = update_sql
    return await fetch_all(connection, sql, params)


@functools.lru_cache(maxsize=64)
def update_then_append_sql(update_sql: str) -> str:
    """`update_and_append`'s statement for a page with events: built once per UPDATE shape."""
    return (f"WITH page AS ({update_sql}),{_WRITER_LOCK.format(source='FROM page')}, "
            f"appended AS ({_INSERT_EVENTS}) SELECT page.* FROM page")


async def read_events(session: AsyncSession, tenant_id: uuid.UUID, after_sequence: int, **filters) -> list[ChangeEvent]:
    """The events of `scan_events` (same keywords), without how far it looked.

    With filters, a page may hold fewer than `limit` rows although more match
    further on; resume from the last returned sequence (or use `latest_sequence`
    to skip ahead).
    """
    return (await scan_events(session, tenant_id, after_sequence, **filters)).events


@dataclass(frozen=True)
class ScannedEvents:
    """One bounded look at a tenant's log after some position (see `scan_events`)."""

    events: list[ChangeEvent]  # the matching events, in sequence order
    through_sequence: int  # the reader may resume after this: every match up to it is in `events`
    caught_up: bool  # nothing committed lies beyond through_sequence (as of the read)
    pruned_through_sequence: int  # the tenant's retention watermark, read in the same snapshot


async def scan_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    after_sequence: int,
    *,
    mailbox_ids: Iterable[uuid.UUID] | None = None,
    types: Iterable[EventType] | None = None,
    partition: StreamPartition | None = None,
    limit: int = 1000,
    scan_limit: int | None = None,
) -> ScannedEvents:
    """Up to `limit` committed events after `after_sequence` that match the filters
    (empty or None: no filter; `partition`: only the mailboxes of that stream
    partition, see `PARTITION_SQL`), in sequence order, and how far the read looked, so
    a filtered reader can move past rows that do not match without ever receiving them.

    One statement (one snapshot): walk at most `scan_limit` (default `limit`)
    rows of the tenant after `after_sequence` along the (tenant_id, sequence)
    index, keep up to `limit` that match the filters, and always return the
    last row of that window too, so the window's end is known even when
    nothing in it matches. The tenant row is LEFT JOINed so an empty window
    still reports the pruned watermark. Raises NotFound for an unknown tenant.

    Every stream read runs this, so the rows are fetched as plain tuples in
    Postgres' binary format (`_fetch_tuples`): SQLAlchemy's result layer over
    the text protocol parses timestamps and UUIDs from text and runs a Python
    processor per text[] value, several times the CPU (docs/performance.md).
    """
    sql, params = _scan_query(tenant_id, after_sequence, mailbox_ids, types, partition, limit, scan_limit)
    return _scanned(await _fetch_tuples(session, sql, params), tenant_id, after_sequence, params)


def _scan_query(tenant_id: uuid.UUID, after_sequence: int, mailbox_ids: Iterable[uuid.UUID] | None,
                types: Iterable[EventType] | None, partition: StreamPartition | None, limit: int,
                scan_limit: int | None) -> tuple[str, dict]:
    """`scan_events`' statement and its parameters."""
    if limit < 1:
        raise ValueError("limit must be positive")
    scan_limit = max(scan_limit or limit, limit)
    mailbox_ids = list(mailbox_ids or ())
    type_values = [EventType(t).value for t in types or ()]
    params = {"tenant_id": tenant_id, "after": after_sequence, "scan_limit": scan_limit, "picked_limit": limit + 1,
              "mailbox_ids": mailbox_ids, "types": type_values,
              "partition_index": partition.index if partition else 0, "partition_count": partition.count if partition else 1}
    return _scan_sql(bool(mailbox_ids), bool(type_values), partition is not None), params


def _scanned(rows: list[tuple], tenant_id: uuid.UUID, after_sequence: int, params: dict) -> ScannedEvents:
    """`scan_events`' answer from the rows of its statement."""
    limit, scan_limit = params["picked_limit"] - 1, params["scan_limit"]
    if not rows:
        raise NotFound("tenant not found", metadata={"tenant_id": str(tenant_id)})
    # Each row is (pruned_through, *_READ_COLUMNS, window_end, window_rows, matches);
    # only the tenant's row (sequence NULL) when the window is empty.
    pruned_through, first = rows[0][0], rows[0]
    if first[1] is None:
        return ScannedEvents([], after_sequence, True, pruned_through)
    window_end, window_rows = first[_WINDOW_END], first[_WINDOW_ROWS]
    matching = [row for row in rows if row[_MATCHES]]
    if len(matching) >= limit:
        # More matches may follow within the window: resume after the last one kept.
        kept = matching[:limit]
        through = kept[-1][1]
        caught_up = through == window_end and window_rows < scan_limit
    else:
        kept = matching
        through = window_end
        caught_up = window_rows < scan_limit
    return ScannedEvents([_event(row[1:_WINDOW_END]) for row in kept], through, caught_up, pruned_through)


# Positions in a scan row, after the watermark and the `_READ_COLUMNS`.
_WINDOW_END = 1 + _READ_COLUMN_COUNT
_WINDOW_ROWS = _WINDOW_END + 1
_MATCHES = _WINDOW_END + 2


async def driver_connection(session: AsyncSession):
    """The driver's (psycopg) connection under `session`, in its transaction."""
    return (await (await session.connection()).get_raw_connection()).driver_connection


async def _fetch_tuples(session: AsyncSession, sql: str, params: dict) -> list[tuple]:
    """Rows of `sql` as plain tuples, on the session's connection and transaction,
    in psycopg's binary format (see `scan_events` for why)."""
    return await fetch_all(await driver_connection(session), sql, params)


# A mailbox's stream partition, as domain.stream_partitions.partition_of computes it:
# the first 32 bits of MD5(id text), unsigned, modulo the count; no mailbox: 0.
PARTITION_SQL = "coalesce(mod(('x' || left(md5(mailbox_id::text), 8))::bit(32)::bigint, %(partition_count)s), 0)"


def _filter_sql(by_mailbox: bool, by_type: bool, by_partition: bool = False) -> str:
    """The stream filters as SQL over the `_READ_COLUMNS` (arrays bound as `= ANY(...)`: one placeholder each)."""
    conditions = []
    if by_mailbox:
        conditions.append("mailbox_id = ANY(%(mailbox_ids)s)")
    if by_type:
        conditions.append("event_type = ANY(%(types)s)")
    if by_partition:
        conditions.append(f"{PARTITION_SQL} = %(partition_index)s")
    return " AND ".join(conditions) or "true"


@functools.cache
def _scan_sql(by_mailbox: bool, by_type: bool, by_partition: bool = False) -> str:
    """The scan query for one filter shape (built once: every stream read runs it)."""
    matches = _filter_sql(by_mailbox, by_type, by_partition)
    # The window aggregates sit one level below the filter so they see the whole
    # window; one more pick than wanted tells "exactly `limit` matches" from "more follow".
    return f"""
    SELECT t.pruned_through_sequence, picked.*
    FROM tenants AS t
    LEFT JOIN (
        SELECT w.*, {matches} AS matches
        FROM (
            SELECT scanned.*, max(scanned.sequence) OVER () AS window_end, count(*) OVER () AS window_rows
            FROM (
                SELECT {_READ_COLUMNS}
                FROM change_events
                WHERE tenant_id = %(tenant_id)s AND sequence > %(after)s
                ORDER BY sequence
                LIMIT %(scan_limit)s
            ) AS scanned
        ) AS w
        WHERE ({matches}) OR w.sequence = w.window_end
        ORDER BY w.sequence
        LIMIT %(picked_limit)s
    ) AS picked ON true
    WHERE t.id = %(tenant_id)s
    ORDER BY picked.sequence
    """


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
#
# With a limit, only the `limit` lowest-sequenced expired rows are cut this
# time (a prefix of the expired rows in sequence order, so every tenant's cut
# still covers all its expired rows below it): a backlog is removed in bounded
# transactions by calling again until fewer than `limit` rows go.
#
# The prune worker runs it on the default partition only (whole days are
# dropped instead: store/partitions.py); called on `change_events` it cuts
# across all of them.
_PRUNE = """
    WITH expired AS (
        SELECT tenant_id, sequence
        FROM {table}
        WHERE observed_at < :older_than
        ORDER BY sequence
        LIMIT :limit
    ), cut AS (
        SELECT tenant_id, max(sequence) AS through
        FROM expired
        GROUP BY tenant_id
    ), raised AS (
        UPDATE tenants
        SET pruned_through_sequence = greatest(tenants.pruned_through_sequence, cut.through),
            updated = now()
        FROM cut
        WHERE tenants.id = cut.tenant_id
        RETURNING tenants.id
    ), deleted AS (
        DELETE FROM {table} AS e
        USING cut
        WHERE e.tenant_id = cut.tenant_id AND e.sequence <= cut.through
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM raised) AS tenants
    """
_PRUNABLE = ("change_events", "change_events_default")


async def prune_events(
    session: AsyncSession, older_than: datetime, *, limit: int | None = None, table: str = "change_events"
) -> int:
    """Delete events observed before `older_than` (and any older-sequenced ones of the
    same tenant), raising each affected tenant's pruned_through_sequence. Returns rows deleted.

    `limit` bounds how many expired rows one call cuts (None: all). Rows deleted
    is at least the number cut, so fewer than `limit` deleted means none remain.
    `table`: the whole log, or only its default partition (the prune worker's).
    """
    if table not in _PRUNABLE:
        raise ValueError(f"cannot prune {table!r}")
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    if limit is not None and limit < 1:
        raise ValueError("limit must be positive")
    row = (await session.execute(text(_PRUNE.format(table=table)), {"older_than": older_than, "limit": limit})).one()
    return int(row.deleted)


async def prune_chunk(sessions: Sessions, older_than: datetime, *, limit: int, table: str = "change_events") -> int:
    """`prune_events` as its own transaction: one chunk."""
    async with transaction(sessions) as session:
        return await prune_events(session, older_than, limit=limit, table=table)


async def scan(sessions: Sessions, tenant_id: uuid.UUID, after_sequence: int, *,
               mailbox_ids: Iterable[uuid.UUID] | None = None, types: Iterable[EventType] | None = None,
               partition: StreamPartition | None = None, limit: int = 1000,
               scan_limit: int | None = None) -> ScannedEvents:
    """`scan_events` (same options) as a stream's read: its one statement in autocommit on
    the driver's connection (`db.driver_autocommit`), one snapshot like any statement,
    with no session's BEGIN and ROLLBACK round trips around it."""
    sql, params = _scan_query(tenant_id, after_sequence, mailbox_ids, types, partition, limit, scan_limit)
    async with driver_autocommit(sessions) as connection:
        rows = await fetch_all(connection, sql, params)
    return _scanned(rows, tenant_id, after_sequence, params)


async def stream_bounds(sessions: Sessions, tenant_id: uuid.UUID, mailbox_ids: Iterable[uuid.UUID]) -> tuple[int, int]:
    """(pruned watermark, latest sequence) of the tenant's log, for a stream about to
    start; NotFound when one of `mailbox_ids` is not the tenant's."""
    async with reading(sessions) as session:
        for mailbox_id in mailbox_ids:
            await get_mailbox(session, tenant_id, mailbox_id)  # NotFound if not ours
        tenant = await get_tenant(session, tenant_id)
        return tenant.pruned_through_sequence, await latest_sequence(session, tenant_id)
