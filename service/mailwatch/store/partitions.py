"""The change log's partitions: one per UTC day of `observed_at`, created ahead, dropped whole.

`change_events` is range-partitioned by `observed_at` (migration 0009). Each
UTC day has a partition `change_events_pYYYYMMDD`; `change_events_default`
holds any row outside them (an observed time far in the past or future), so
an insert never fails for want of a partition.

Dropping a day is how retention keeps up at tens of millions of rows a day: a
whole table goes, no row is deleted. In the same transaction each tenant's
`pruned_through_sequence` is raised to the highest sequence it had in that
day, so "a cursor at or below the watermark has expired" stays exact and no
reader can miss an event silently: anything still stored below a watermark
(an event of a later day with a lower sequence) is simply never read again
and goes with its own day. The watermark is computed with one index probe per
tenant on the detached day, while the parent is locked (DETACH), so no row can
arrive in it meanwhile.

DDL waits at most `LOCK_TIMEOUT` for its lock (a long-running reader must not
make every stream queue behind it); a pass that times out is retried by the
next. Replicas serialise on an advisory lock; a replica that does not get it
skips the pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import text

from mailwatch.store.db import Sessions, transaction

PARENT = "change_events"
DEFAULT_PARTITION = "change_events_default"
LOCK_TIMEOUT = "5s"
# Advisory lock (two int4 halves): "change-log partition maintenance".
_MAINTENANCE_LOCK = (0x6D77_0001, 2)


@dataclass(frozen=True)
class Partition:
    name: str
    upper: datetime | None  # exclusive upper bound; None for the default partition
    estimated_rows: int  # Postgres' estimate (pg_class.reltuples), -1 if never analysed


def day_partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def day_bounds(day: date) -> tuple[datetime, datetime]:
    lower = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return lower, lower + timedelta(days=1)


_LIST = text(
    r"""
    SELECT c.relname,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz,
           c.reltuples::bigint
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = CAST(:parent AS regclass)
    ORDER BY 2 NULLS LAST
    """
)


async def list_partitions(sessions: Sessions) -> list[Partition]:
    """The attached partitions, oldest upper bound first, the default last."""
    async with transaction(sessions) as session:
        rows = (await session.execute(_LIST, {"parent": PARENT})).all()
    return [Partition(name, upper, estimated_rows) for name, upper, estimated_rows in rows]


async def _maintenance(session) -> bool:
    """Take the maintenance lock for this transaction (False: another replica holds it) and bound lock waits."""
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    return bool((await session.execute(
        text("SELECT pg_try_advisory_xact_lock(CAST(:a AS int4), CAST(:b AS int4))"),
        {"a": _MAINTENANCE_LOCK[0], "b": _MAINTENANCE_LOCK[1]},
    )).scalar_one())


async def ensure_day_partitions(sessions: Sessions, first_day: date, days: int) -> list[str]:
    """Create the partitions of `days` UTC days from `first_day` on that do not exist yet; their names.

    Rows of such a day already in the default partition move into the new
    partition in the same transaction (Postgres refuses to create a partition
    whose rows sit in the default one)."""
    created = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        if await _create_day(sessions, day):
            created.append(day_partition_name(day))
    return created


async def _create_day(sessions: Sessions, day: date) -> bool:
    name = day_partition_name(day)
    lower, upper = day_bounds(day)
    bounds = f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
    async with transaction(sessions) as session:
        if not await _maintenance(session):
            return False
        exists = (await session.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})).scalar_one()
        if exists:
            return False
        in_range = {"lower": lower, "upper": upper}
        strays = (await session.execute(text(
            f"SELECT EXISTS (SELECT FROM {DEFAULT_PARTITION} WHERE observed_at >= :lower AND observed_at < :upper)"
        ), in_range)).scalar_one()
        if not strays:
            await session.execute(text(f"CREATE TABLE {name} PARTITION OF {PARENT} {bounds}"))
            return True
        # The default partition is detached while its rows of that day move, then attached again.
        await session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {DEFAULT_PARTITION}"))
        await session.execute(text(f"CREATE TABLE {name} PARTITION OF {PARENT} {bounds}"))
        await session.execute(text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE observed_at >= :lower AND observed_at < :upper "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ), in_range)
        await session.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {DEFAULT_PARTITION} DEFAULT"))
        return True


# Each tenant's watermark rises to its highest sequence in the detached day
# (one backward probe of that day's (tenant_id, sequence) index per tenant).
_RAISE_WATERMARKS = """
    UPDATE tenants
    SET pruned_through_sequence = day.through, updated = now()
    FROM (
        SELECT t.id, (SELECT max(e.sequence) FROM {day} AS e WHERE e.tenant_id = t.id) AS through
        FROM tenants AS t
    ) AS day
    WHERE tenants.id = day.id AND day.through > tenants.pruned_through_sequence
"""


async def drop_expired_partitions(sessions: Sessions, older_than: datetime) -> list[Partition]:
    """Drop every partition (not the default) whose days all lie before `older_than`,
    raising the tenants' watermarks with each; the partitions dropped."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    dropped = []
    for partition in await list_partitions(sessions):
        if partition.upper is None or partition.upper > older_than:
            continue
        if await _drop(sessions, partition):
            dropped.append(partition)
    return dropped


async def _drop(sessions: Sessions, partition: Partition) -> bool:
    async with transaction(sessions) as session:
        if not await _maintenance(session):
            return False
        attached = (await session.execute(text(
            "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass(:name) "
            "AND inhparent = CAST(:parent AS regclass))"), {"name": partition.name, "parent": PARENT})).scalar_one()
        if not attached:
            return False  # another replica dropped it meanwhile
        await session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION \"{partition.name}\""))
        await session.execute(text(_RAISE_WATERMARKS.format(day=f'"{partition.name}"')))
        await session.execute(text(f'DROP TABLE "{partition.name}"'))
        return True
