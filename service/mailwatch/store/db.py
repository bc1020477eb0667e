"""Engine and session set-up, and the start-up check that the schema is current.

Engine settings follow the Prefect server: READ COMMITTED, sessions with
`expire_on_commit=False` (we return plain dataclasses, so nothing should lazily
reload after commit), and a ping before handing out a pooled connection, though
only one that sat idle in the pool (`_ping_idle_connections`). Connections run
with `TimeZone=UTC` so every `timestamptz` comes back as an aware UTC datetime.

Beside SQLAlchemy's pool the engine keeps a pool of psycopg connections in autocommit
(`DriverPool`: `Engine.driver_connection`, `driver_autocommit`) for the one-statement
verbs every change runs: ingest's write, the sync's claim and page commit, a stream's
read. Checking a connection out of SQLAlchemy's pool for each of them (greenlet
hand-offs, an isolation-level switch and its reset) cost about as much CPU as the
statement itself (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import RowFactory, namedtuple_row, tuple_row
from sqlalchemy import event, exc
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.engine import Compiled
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mailwatch.domain.errors import NotMigrated
from mailwatch.database_url import sqlalchemy_url


# Every connection's session settings. Timestamps in UTC. No JIT: our statements are short
# lookups by index, but the planner's row estimates for small, rarely analyzed tables (a
# deployment's few tenants) can push a claim's estimated cost at a million mailboxes past
# jit_above_cost, and compiling it then costs 30-110 ms on every claim for a plan that runs
# in under one (docs/capacity.md, the million-mailbox run).
SESSION_OPTIONS = "-c TimeZone=UTC -c jit=off"

# A new connection that has not completed within this many seconds fails (libpq's
# connect_timeout): a host that swallows packets (a failover's old address) would
# otherwise hold the caller, and its pool slot, for the operating system's TCP timeout.
CONNECT_TIMEOUT_SECONDS = 10


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    driver_pool_size: int = 10,
    application_name: str = "mailwatch",
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    echo: bool = False,
) -> "Engine":
    """An async engine on psycopg 3.

    The pools are per process; size SQLAlchemy's for the process's concurrent
    transactions (RPC handlers + workers) and the driver pool (`driver_pool_size`)
    for its concurrent hot-path statements (a sync's page commit per sync slot, the
    claim, ingest's writes, stream reads). LISTEN connections are taken from neither.
    """
    engine = create_async_engine(
        sqlalchemy_url(url),
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # Recycle now and then so connections follow failovers / DNS changes.
        pool_recycle=RECYCLE_SECONDS,
        pool_use_lifo=True,
        connect_args={"options": SESSION_OPTIONS, "application_name": application_name,
                      "connect_timeout": connect_timeout},
        # A database error's text must not carry its statement's parameters:
        # they include sealed credentials and mailbox addresses, and unexpected
        # errors are logged.
        hide_parameters=True,
        echo=echo,
    )
    _ping_idle_connections(engine)
    connect = {"autocommit": True, "options": SESSION_OPTIONS, "application_name": application_name,
               "connect_timeout": connect_timeout}
    return Engine(engine.sync_engine, driver_pool=functools.partial(
        DriverPool, engine.url.set(drivername="postgresql").render_as_string(hide_password=False), connect,
        max_size=driver_pool_size, timeout=pool_timeout))


# A pooled connection back in the pool for longer than this is pinged before it is
# handed out again; one returned more recently is presumed alive.
PING_AFTER_IDLE_SECONDS = 1.0
# Connections are replaced after this long, so they follow failovers / DNS changes.
RECYCLE_SECONDS = 1800.0
_RETURNED_AT = "mailwatch_returned_at"


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """`pool_pre_ping` for connections that sat idle: a connection dropped while idle
    (a Postgres restart or failover, a proxy's idle timeout) is replaced before anyone
    uses it, and a failed ping invalidates every older pooled connection
    (`InvalidatePoolError`, as pre-ping does). A busy service's connections come back
    within milliseconds, so most checkouts skip the ping's round trip, which on the
    sync's path cost as much CPU as the statement it preceded. A connection that dies
    within the idle window fails its statement once; that error invalidates the pool
    in turn (SQLAlchemy's disconnect handling) and the caller sees the database as
    unavailable, as when Postgres is down."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def returned(dbapi_connection, record) -> None:
        if dbapi_connection is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def ping_if_idle(dbapi_connection, record, proxy) -> None:
        returned_at = record.info.get(_RETURNED_AT)  # None: connected for this checkout
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            raise exc.InvalidatePoolError(str(error)) from error


class Engine(AsyncEngine):
    """SQLAlchemy's async engine (sessions, Core, Alembic) and a `DriverPool` beside it
    (`driver_connection`), closed by `dispose` like SQLAlchemy's own pool."""

    __slots__ = ("_new_driver_pool", "_driver_pool")

    def __init__(self, sync_engine, *, driver_pool: "Callable[[], DriverPool]") -> None:
        super().__init__(sync_engine)
        self._new_driver_pool = driver_pool
        self._driver_pool = driver_pool()

    def driver_connection(self) -> "contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection]":
        """A psycopg connection in autocommit from the driver pool, for one or a few statements."""
        return self._driver_pool.connection()

    async def dispose(self, close: bool = True) -> None:
        """Close both pools' idle connections (the engine can be used again: new ones are made)."""
        pool, self._driver_pool = self._driver_pool, self._new_driver_pool()
        await pool.close()
        await super().dispose(close)


class DriverPoolTimeout(psycopg.OperationalError):
    """Every driver connection stayed in use for the pool's whole timeout."""


class DriverPool:
    """Open psycopg connections in autocommit, reused most recently returned first.

    Made for the hot path's one-statement verbs: a checkout is a list pop, with no
    SQLAlchemy checkout, greenlet hand-off or isolation-level switch and reset.
    Like `_ping_idle_connections`, a connection is pinged before use only if it sat
    idle for over `PING_AFTER_IDLE_SECONDS`; a failed ping, or a statement that found
    its connection broken, discards every idle connection (they are as likely dead:
    a Postgres restart), as SQLAlchemy's pool invalidation does. A new connection is
    made by the caller that needs it, so while Postgres is down a checkout fails at
    once (the caller sees the database as unavailable, as with SQLAlchemy's pool) and
    the first one after it is back succeeds. psycopg_pool was measured as cheap, but
    it connects in the background with a growing backoff: callers wait for it (up
    to its timeout) while Postgres is down, and after an outage recovery waits for
    the next attempt.
    """

    def __init__(self, conninfo: str, connect: dict, *, max_size: int, timeout: float,
                 recycle_seconds: float = RECYCLE_SECONDS) -> None:
        self._conninfo = conninfo
        self._connect = connect
        self._timeout = timeout
        self._recycle_seconds = recycle_seconds
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple["psycopg.AsyncConnection", float, float]] = []  # (connection, made, returned)
        self._closed = False

    def connection(self) -> "_Checkout":
        """`async with pool.connection() as connection:` one connection, back in the pool after."""
        return _Checkout(self)

    async def _acquire_slot(self) -> None:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise DriverPoolTimeout(f"no driver connection free within {self._timeout:g} s") from None
        else:
            await self._slots.acquire()  # free: no wait, no timer

    async def _take(self) -> tuple["psycopg.AsyncConnection", float]:
        while self._idle:
            connection, made, returned = self._idle.pop()
            now = time.monotonic()
            if now - made > self._recycle_seconds:
                await connection.close()  # follow failovers / DNS changes, as pool_recycle does
                continue
            if now - returned < PING_AFTER_IDLE_SECONDS:
                return connection, made
            try:
                await connection.execute("")  # an empty query: one round trip, nothing parsed
                return connection, made
            except psycopg.Error:
                await connection.close()
                await self._discard_idle()
            except BaseException:
                # Cancelled mid-ping (e.g. a stream whose client went away): the connection is
                # in no state to pool and must not wait for the garbage collector to close it.
                await connection.close()
                raise
        connection = await DriverConnection.connect(self._conninfo, **self._connect)
        return connection, time.monotonic()

    def _keep(self, connection: "psycopg.AsyncConnection", made: float) -> bool:
        """Back into the pool if it is fit for the next caller (True); else the caller closes it.
        `pgconn.transaction_status` is libpq's int: `connection.info` would build a
        ConnectionInfo and an enum member on every return."""
        if not self._closed and connection.pgconn.transaction_status == TransactionStatus.IDLE:
            self._idle.append((connection, made, time.monotonic()))
            return True
        return False

    async def _close_unfit(self, connection: "psycopg.AsyncConnection") -> None:
        broken = connection.broken
        await connection.close()  # broken, closed, or returned mid-statement (a cancelled caller)
        if broken:
            await self._discard_idle()

    async def _discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection, _, _ in idle:
            await connection.close()

    async def close(self) -> None:
        """Close the idle connections now, the others as they come back."""
        self._closed = True
        await self._discard_idle()


class _Checkout:
    """One use of a `DriverPool` connection (`async with pool.connection()`): a slot, then the
    connection, given back when the block ends. A plain class: as an asynccontextmanager
    each use built a generator and a context manager object and stepped through both, and
    every change takes four of these (ingest's write, the claim, the page commit, a stream
    read)."""

    __slots__ = ("_pool", "_connection", "_made")

    def __init__(self, pool: DriverPool) -> None:
        self._pool = pool

    async def __aenter__(self) -> "psycopg.AsyncConnection":
        pool = self._pool
        await pool._acquire_slot()
        try:
            self._connection, self._made = await pool._take()
        except BaseException:
            pool._slots.release()
            raise
        return self._connection

    async def __aexit__(self, *exc_info) -> None:
        pool = self._pool
        try:
            if not pool._keep(self._connection, self._made):
                await pool._close_unfit(self._connection)
        finally:
            pool._slots.release()


class DriverConnection(psycopg.AsyncConnection):
    """A driver pool's connection: psycopg's own, plus a cursor kept for each statement
    `fetch_all` runs on it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.statement_cursors: dict[tuple, tuple[psycopg.AsyncCursor, bytes]] = {}


async def fetch_all(connection: psycopg.AsyncConnection, sql: str, params: dict, *, binary: bool = True,
                    row_factory: RowFactory = tuple_row) -> list:
    """Every row of `sql` run with `params` on `connection` (binary results by default).

    On a driver pool's connection (`DriverConnection`) each statement runs on a cursor of
    its own, kept with the connection, and as the same bytes each time: psycopg keeps a
    cursor's adaptation state (a dumper per parameter type, a loader per result column)
    while the same query object runs on it again, and a new cursor builds it afresh, which
    cost 10-40 us of CPU per hot statement (the most for the claim's 41 columns).
    The kept cursor holds its last result until its next run, so at most one result per
    statement and connection stays in memory."""
    if not isinstance(connection, DriverConnection):
        async with connection.cursor(binary=binary, row_factory=row_factory) as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchall()
    key = (sql, binary, row_factory)
    kept = connection.statement_cursors.get(key)
    if kept is None:
        kept = connection.statement_cursors[key] = (connection.cursor(binary=binary, row_factory=row_factory),
                                                    sql.encode(connection.info.encoding))
    cursor, query = kept
    await cursor.execute(query, params)
    return await cursor.fetchall()


def compiled_for_driver(statement) -> tuple[str, Compiled]:
    """`statement` compiled once for the driver pool's connections (psycopg's dialect): its
    SQL, and the Compiled whose `construct_params` fills in its named bind parameters
    (callers cache the pair: building and compiling a hot statement per run would cost
    more than running it)."""
    compiled = statement.compile(dialect=psycopg_dialect.dialect())
    return compiled.string, compiled


async def fetch_compiled(sessions: "Sessions", compiled: tuple[str, Compiled], params: dict) -> list:
    """Every row (named tuples) of a statement `compiled_for_driver` built, its bind
    parameters filled from `params`: ONE statement in autocommit on the driver pool's
    connection (no ORM session, no SQLAlchemy execution or result layer)."""
    sql, statement = compiled
    async with driver_autocommit(sessions) as connection:
        return await fetch_all(connection, sql, statement.construct_params(params), row_factory=namedtuple_row)


def uuid_array(values: Iterable[uuid.UUID]) -> str:
    """`values` as the text of a Postgres uuid[] (`{…,…}`; a uuid's text needs no quoting),
    for a parameter the statement casts to uuid[]: psycopg adapts a list in Python,
    element by element, at several times the cost of the rest of a short statement's
    parameters."""
    return "{" + ",".join(str(value) for value in values) + "}"


Sessions = async_sessionmaker[AsyncSession]


def session_factory(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def transaction(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """A unit of work: committed when the block ends, rolled back if it raises."""
    async with sessions() as session, session.begin():
        yield session


@contextlib.asynccontextmanager
async def autocommit(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """For a verb that is ONE statement: it is its own transaction, with no BEGIN
    and COMMIT round trips, and its locks end when Postgres finishes it."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


def driver_autocommit(sessions: Sessions) -> "contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection]":
    """`async with driver_autocommit(sessions) as connection:` a connection of the engine's
    driver pool (`Engine.driver_connection`), in autocommit: for the statements every change
    runs, built and compiled once, with no ORM session, SQLAlchemy execution layer or
    SQLAlchemy pool checkout around them (and no context manager of its own around the pool's)."""
    return sessions.kw["bind"].driver_connection()


@contextlib.asynccontextmanager
async def reading(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """Reads only: whatever the block runs ends (rolled back) with it; nothing is committed."""
    async with sessions() as session:
        yield session


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise NotMigrated unless the database is exactly at the head revision."""
    from mailwatch.store import migrate  # alembic is only needed here and by the CLI

    expected = migrate.head()
    async with engine.connect() as connection:
        found = await connection.run_sync(migrate.current_on_connection)
    if found != expected:
        raise NotMigrated(
            f"database schema is at revision {found or 'none (empty database)'}, "
            f"expected {expected}: run `mailwatch migrate`"
        )
