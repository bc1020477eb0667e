"""Engine and session set-up, and the start-up check that the schema is current.

Engine settings follow the Prefect server: READ COMMITTED, `pool_pre_ping`,
sessions with `expire_on_commit=False` (we return plain dataclasses, so nothing
should lazily reload after commit). Connections run with `TimeZone=UTC` so
every `timestamptz` comes back as an aware UTC datetime.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

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
    return create_async_engine(
        sqlalchemy_url(url),
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
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
