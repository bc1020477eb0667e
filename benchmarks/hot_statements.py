"""Client CPU of the statements every change runs, psycopg (as the service runs them) vs asyncpg.

Starts a throwaway Postgres (stopped by its pid on exit), migrates it and registers
`--mailboxes` mailboxes of one tenant, then runs the paced pipeline's hot statements
one after another, in cycles, on the chosen event loop (uvloop by default):

- record: ingest's batch of 3 notifications, one of them news (store.notifications `_RECORD`);
- claim: the sync's claim of 1 mailbox (store.sync_claims `_claim_statement`);
- commit: its final page commit with 1 event, the fenced UPDATE, the append and the NOTIFY
  in one statement (store.changes `update_and_append`);
- read: a stream feed's read of the last few rows (store.changes `_scan_sql`, unfiltered);
- `SELECT 1`, the floor of a round trip.

Each statement is the store module's own SQL and parameters, run six ways:

- `psycopg`: as the service runs it, a `DriverPool` checkout and `fetch_all` (the statement's
  kept cursor, binary results, the service's row factory);
- `psycopg bare`: the same on one connection held outside the pool;
- `asyncpg driver`: the same SQL with its placeholders turned into `$n`, through
  `Connection.fetch` (prepared once, then from asyncpg's statement cache), on a
  `DriverPool`'s checkout over asyncpg connections (`AsyncpgDriverPool`): what a move of
  the hot path to asyncpg would run;
- `asyncpg pool`: the same on an `asyncpg.Pool`, which sends a reset query to every
  connection given back; `asyncpg pool*` without it (`reset=`);
- `asyncpg bare`: the same on one connection held outside any pool.

The figure is this process's CPU (time.process_time) per statement in microseconds: the
client's cost; Postgres runs in its own processes. The ways take turns in blocks of
`--block` cycles, so a host that speeds up or slows down moves them alike.

    python benchmarks/hot_statements.py [--cycles 2000] [--block 250] [--runs 3] [--event-loop uvloop]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures

import asyncpg  # noqa: E402
import psycopg  # noqa: E402
from psycopg.rows import namedtuple_row  # noqa: E402

from mailwatch import event_loop  # noqa: E402
from mailwatch.config import EVENT_LOOPS  # noqa: E402
from mailwatch.database_url import libpq_url  # noqa: E402
from mailwatch.domain.models import EventType, NewEvent  # noqa: E402
from mailwatch.store import changes, notifications, sync_claims  # noqa: E402
from mailwatch.store.db import (  # noqa: E402
    PING_AFTER_IDLE_SECONDS, DriverPool, create_engine, fetch_all, session_factory,
)
from mailwatch_devstack.postgres import TemporaryPostgres  # noqa: E402
from tests.fixtures.factory import Rows  # noqa: E402

STATEMENTS = ("record", "claim", "commit", "read", "select1")
# What one paced change runs (a record per change is the most: a batch may carry several).
PER_CHANGE = ("record", "claim", "commit", "read")
LEASE = timedelta(seconds=60)
OWNER = "bench-replica"
FEED_READ_ROWS = 1000  # streams.changes.ChangeLog.feed_read_rows' default


def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with psycopg's `%(name)s` placeholders as asyncpg's `$n` (one number per
    name, in order of first use), and the names in that order."""
    names: list[str] = []

    def number(found: re.Match) -> str:
        if found.group(0) == "%%":
            return "%"
        name = found.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"%%|%\((\w+)\)s", number, sql), tuple(names)


class Psycopg:
    """The service's way: kept cursors, binary results, on the engine's DriverPool
    (`pool`) or on one kept connection of it (`bare`)."""

    def __init__(self, name: str, connection) -> None:
        self.name = name
        self.driver_connection = connection  # () -> async context manager yielding a connection

    async def record(self, latest: dict, now: datetime):
        async with self.driver_connection() as connection:
            return await fetch_all(connection, notifications._compiled_record(),
                                   notifications._record_params(latest, now), row_factory=namedtuple_row)

    async def claim(self, now: datetime):
        sql, compiled = sync_claims._compiled_claim()
        async with self.driver_connection() as connection:
            return await fetch_all(connection, sql, compiled.construct_params(
                sync_claims._claim_params(OWNER, now, LEASE, 1, (), ())), row_factory=namedtuple_row)

    async def commit(self, update: tuple, params: dict, tenant_id: uuid.UUID, events: list[NewEvent]):
        sql, compiled = update
        async with self.driver_connection() as connection:
            return await changes.update_and_append(connection, sql, compiled.construct_params(params), tenant_id,
                                                   events)

    async def read(self, tenant_id: uuid.UUID, after: int):
        sql, params = changes._scan_query(tenant_id, after, None, None, None, FEED_READ_ROWS, FEED_READ_ROWS)
        async with self.driver_connection() as connection:
            return await fetch_all(connection, sql, params)

    async def select1(self):
        async with self.driver_connection() as connection:
            return await fetch_all(connection, "SELECT 1", {})


class Asyncpg:
    """The same SQL and parameters on asyncpg: `$n` placeholders, prepared statements
    (asyncpg's statement cache), on a pool's connection or one kept connection."""

    def __init__(self, name: str, connection) -> None:
        self.name = name
        self._connection = connection  # () -> async context manager yielding a connection
        self._numbered: dict[str, tuple[str, tuple[str, ...]]] = {}

    async def _fetch(self, sql: str, params: dict):
        found = self._numbered.get(sql)
        if found is None:
            found = self._numbered[sql] = numbered(sql)
        query, names = found
        async with self._connection() as connection:
            return await connection.fetch(query, *[params[name] for name in names])

    async def record(self, latest: dict, now: datetime):
        return await self._fetch(notifications._compiled_record(), notifications._record_params(latest, now))

    async def claim(self, now: datetime):
        sql, compiled = sync_claims._compiled_claim()
        params = compiled.construct_params(sync_claims._claim_params(OWNER, now, LEASE, 1, (), ()))
        # A uuid[] parameter is a list to asyncpg (psycopg: the array's text).
        params["p_skip_tenants"] = params["p_running"] = []
        return await self._fetch(sql, params)

    async def commit(self, update: tuple, params: dict, tenant_id: uuid.UUID, events: list[NewEvent]):
        sql, compiled = update
        return await self._fetch(changes.update_then_append_sql(sql),
                                 {**compiled.construct_params(params), **changes._append_params(tenant_id, events)})

    async def read(self, tenant_id: uuid.UUID, after: int):
        return await self._fetch(*changes._scan_query(tenant_id, after, None, None, None, FEED_READ_ROWS,
                                                      FEED_READ_ROWS))

    async def select1(self):
        return await self._fetch("SELECT 1", {})


class Pipeline:
    """The state a cycle moves along: each mailbox's synced history id, the log's end."""

    def __init__(self, tenant_id: uuid.UUID, addresses: list[str], history: dict[str, int]) -> None:
        self.tenant_id = tenant_id
        self.addresses = addresses
        self.history = history
        self.turn = 0
        self.position = 0

    async def cycle(self, driver, cpu: dict[str, float]) -> None:
        """One change: record (3 notifications, 1 news), claim it, commit its final page, read it."""
        count = len(self.addresses)
        news, *others = (self.addresses[(self.turn + k) % count] for k in (0, count // 3, 2 * count // 3))
        self.turn += 1
        now = datetime.now(timezone.utc)
        latest = {news: self.history[news] + 10, **{address: self.history[address] for address in others}}

        started = time.process_time()
        await driver.record(latest, now)
        cpu["record"] += (mark := time.process_time()) - started
        [claimed] = await driver.claim(now)
        cpu["claim"] += (started := time.process_time()) - mark
        mailbox_id = claimed["id"] if isinstance(driver, Asyncpg) else claimed.id
        expected = self.history[news]
        params = {"p_id": mailbox_id, "p_owner": OWNER, "p_expected": expected, "p_new_history_id": expected + 10,
                  "p_now": now, "p_lease_expires_at": now + LEASE, "p_catch_up_at": now}
        event = NewEvent(mailbox_id=mailbox_id, email_address=news, type=EventType.MESSAGE_ADDED,
                         history_id=expected + 10, message_id=f"m{self.turn}", thread_id=f"t{self.turn}",
                         label_ids=("INBOX", "UNREAD"))
        update = sync_claims._page_update(sync_claims.PageEnd.FINAL, notifications_missed=False,
                                          keep_page_failures=False)
        mark = time.process_time()
        rows = await driver.commit(update, params, self.tenant_id, [event])
        cpu["commit"] += (started := time.process_time()) - mark
        assert len(rows) == 1, "the fence failed"
        self.history[news] = expected + 10
        rows = await driver.read(self.tenant_id, max(self.position - 3, 0))
        cpu["read"] += (mark := time.process_time()) - started
        self.position = max(row[1] or 0 for row in rows)
        await driver.select1()
        cpu["select1"] += time.process_time() - mark


async def seed(sessions, count: int) -> tuple[uuid.UUID, list[str], dict[str, int]]:
    """A new tenant with `count` mailboxes at history id 100, of addresses no other tenant watches."""
    rows = Rows(sessions)
    tenant = await rows.tenant()
    addresses = [f"user{n}@{tenant.id.hex[:12]}.hot.example.com" for n in range(count)]
    for address in addresses:
        await rows.mailbox(tenant.id, address, history_id=100)
    return tenant.id, addresses, {address: 100 for address in addresses}


SERVER_SETTINGS = {"TimeZone": "UTC", "jit": "off"}  # store.db.SESSION_OPTIONS, as asyncpg takes them


@contextlib.asynccontextmanager
async def ways(url: str) -> AsyncIterator[list]:
    """The six ways to run the statements on the database at `url` (see the module's docstring)."""
    dsn = libpq_url(url)
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(url, pool_size=2, max_overflow=0, driver_pool_size=2)
        stack.push_async_callback(engine.dispose)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings=SERVER_SETTINGS)
        stack.push_async_callback(pool.close)
        # asyncpg's pool sends a reset query (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL) to every
        # connection given back: a round trip per statement. `reset=` replaces it.
        unreset = await asyncpg.create_pool(dsn, min_size=1, max_size=2, reset=_keep_session,
                                            server_settings=SERVER_SETTINGS)
        stack.push_async_callback(unreset.close)
        bare = await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)
        stack.push_async_callback(bare.close)
        driver_pool = AsyncpgDriverPool(dsn, {"server_settings": SERVER_SETTINGS}, max_size=2, timeout=30)
        stack.push_async_callback(driver_pool.close)
        async with engine.driver_connection() as kept:
            pass  # back in the DriverPool; `psycopg bare` also uses it outside the pool
        yield [Psycopg("psycopg", engine.driver_connection),
               Psycopg("psycopg bare", lambda: contextlib.nullcontext(kept)),
               Asyncpg("asyncpg driver", driver_pool.connection),
               Asyncpg("asyncpg pool", pool.acquire),
               Asyncpg("asyncpg pool*", unreset.acquire),
               Asyncpg("asyncpg bare", lambda: contextlib.nullcontext(bare))]


async def measure(url: str, *, cycles: int, block: int, runs: int, mailboxes: int, warmup: int = 50
                  ) -> AsyncIterator[dict[str, dict[str, float]]]:
    """Each run's CPU per statement in microseconds, {way: {statement: us}}: `cycles` changes
    per way, the ways taking turns every `block` cycles, after `warmup` cycles each."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        pipeline = Pipeline(*await seed(session_factory(engine), mailboxes))
    finally:
        await engine.dispose()
    async with ways(url) as drivers:
        for driver in drivers:  # statements prepared, cursors kept, caches filled
            warm: dict[str, float] = defaultdict(float)
            for _ in range(warmup):
                await pipeline.cycle(driver, warm)
        for _ in range(runs):
            cpu = {driver.name: defaultdict(float) for driver in drivers}
            done = 0
            while done < cycles:
                turn = min(block, cycles - done)
                for driver in drivers if done // block % 2 == 0 else reversed(drivers):
                    for _ in range(turn):
                        await pipeline.cycle(driver, cpu[driver.name])
                done += turn
            yield {way: {name: spent[name] / cycles * 1e6 for name in STATEMENTS} for way, spent in cpu.items()}


async def report(args: argparse.Namespace, url: str) -> None:
    run_number = 0
    async for figures in measure(url, cycles=args.cycles, block=args.block, runs=args.runs,
                                 mailboxes=args.mailboxes):
        run_number += 1
        print(f"run {run_number}: {args.cycles} changes per way, load average {_load()}")
        for way, per in figures.items():
            print(f"  {way:14s} " + "  ".join(f"{name} {per[name]:6.1f}" for name in STATEMENTS)
                  + f"  | per change {per_change(per):6.1f}")
        for way, per in figures.items():
            if way != "psycopg":
                print(f"  saved per change by {way}: {per_change(figures['psycopg']) - per_change(per):.1f} us")


def per_change(per: dict[str, float]) -> float:
    return sum(per[name] for name in PER_CHANGE)


class AsyncpgDriverPool(DriverPool):
    """`store.db.DriverPool`'s checkout (slots, most recently returned first, a ping after
    idling, recycling) over asyncpg connections: what the hot path would pay for a
    connection on asyncpg, as it pays the DriverPool's on psycopg."""

    async def _take(self):
        while self._idle:
            connection, made, returned = self._idle.pop()
            now = time.monotonic()
            if now - made > self._recycle_seconds:
                await connection.close()
                continue
            if now - returned < PING_AFTER_IDLE_SECONDS:
                return connection, made
            await connection.execute("SELECT 1")  # asyncpg fails on an empty query's answer
            return connection, made
        return await asyncpg.connect(self._conninfo, **self._connect), time.monotonic()

    def _keep(self, connection, made: float) -> bool:
        if not self._closed and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append((connection, made, time.monotonic()))
            return True
        return False

    async def _close_unfit(self, connection) -> None:
        await connection.close()


async def _keep_session(connection) -> None:
    """Nothing to reset: the hot statements leave no session state (no LISTEN, no cursor, no lock)."""


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=2000, help="changes per way and run (default 2000)")
    parser.add_argument("--block", type=int, default=250, help="cycles of one driver before the next takes its turn")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mailboxes", type=int, default=150)
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="uvloop")
    args = parser.parse_args()

    from mailwatch.store.migrate import upgrade

    postgres = TemporaryPostgres()
    try:
        postgres.start()
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mailwatch")
        url = postgres.url("mailwatch")
        upgrade(url)
        print(f"machine: {os.cpu_count()} CPUs, load average {_load()}; {args.event_loop}; psycopg "
              f"{psycopg.__version__}, asyncpg {asyncpg.__version__}; CPU per statement in us", flush=True)
        event_loop.run(args.event_loop, report, args, url)
        print(f"load average at the end: {_load()}")
        return 0
    finally:
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
