"""Engine and session set-up, and the start-up check that the schema is current.

Engine settings follow the Prefect server: READ COMMITTED, sessions with
`expire_on_commit=False` (we return plain dataclasses, so nothing should lazily
reload after commit), and a ping before handing out a pooled connection, though
only one that sat idle in the pool (`_ping_idle_connections`). Connections run
with `TimeZone=UTC` so every `timestamptz` comes back as an aware UTC datetime.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mailwatch.domain.errors import NotMigrated
from mailwatch.database_url import sqlalchemy_url

if TYPE_CHECKING:
    import psycopg


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    application_name: str = "mailwatch",
    echo: bool = False,
) -> AsyncEngine:
    """An async engine on psycopg 3.

    The pool is per process; size it for the process's concurrent transactions
    (RPC handlers + workers). LISTEN connections are not taken from it.
    """
    engine = create_async_engine(
        sqlalchemy_url(url),
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # Recycle now and then so connections follow failovers / DNS changes.
        pool_recycle=1800,
        pool_use_lifo=True,
        connect_args={"options": "-c TimeZone=UTC", "application_name": application_name},
        # A database error's text must not carry its statement's parameters:
        # they include sealed credentials and mailbox addresses, and unexpected
        # errors are logged.
        hide_parameters=True,
        echo=echo,
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection back in the pool for longer than this is pinged before it is
# handed out again; one returned more recently is presumed alive.
PING_AFTER_IDLE_SECONDS = 1.0
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


Engine = AsyncEngine
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


@contextlib.asynccontextmanager
async def driver_autocommit(sessions: Sessions) -> AsyncIterator["psycopg.AsyncConnection"]:
    """A pooled connection in autocommit, as the driver's own (psycopg) connection: for
    the statements every notification's sync runs, built and compiled once, with no
    ORM session or SQLAlchemy execution layer around them."""
    async with sessions.kw["bind"].connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        yield (await connection.get_raw_connection()).driver_connection


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
